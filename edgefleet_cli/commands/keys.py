"""``edgefleet keys``: the root of trust and signing-key rotation (admin only). Only public keys are shown."""

from __future__ import annotations

import typer

from ..client import ApiClient
from ..options import JsonOpt, ServerOpt, TokenOpt
from ..output import console, print_json, print_table

app = typer.Typer(help="Show the root of trust, rotate the signing key.", no_args_is_help=True)


def _print(root: dict) -> None:
    print_table(f"root of trust, version {root['version']}", ["what", "value"], [
        ("expires", root["expires"]),
        ("root keys", ", ".join(k[:16] for k in root["root_keyids"])),
        ("root threshold", str(root["root_threshold"])),
        ("signing keys", ", ".join(k[:16] for k in root["signing_keyids"])),
        ("signing public keys (hex)", ", ".join(root["signing_keys"])),  # what --trusted-key and --key take
        ("roots published", str(root["chain_length"])),
    ])


@app.command()
def show(server: ServerOpt = None, token: TokenOpt = None, json_out: JsonOpt = False) -> None:
    """The current root: its version, root keys and threshold, and the key bundles and desired state are signed with."""
    root = ApiClient(server, token).get("/api/keys/root")
    if json_out:
        print_json(root)
        return
    _print(root)


@app.command()
def rotate(server: ServerOpt = None, token: TokenOpt = None, json_out: JsonOpt = False) -> None:
    """Make a new signing key under root version N+1; devices stop accepting the old key once they hold it."""
    root = ApiClient(server, token).post("/api/keys/rotate")
    if json_out:
        print_json(root)
        return
    console.print(f"signing key rotated: root version {root['version']}, signing key "
                  f"{root['signing_keyids'][0][:16]}; every device's desired state was re-signed", highlight=False)
