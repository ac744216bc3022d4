"""``edgefleet bundle inspect|verify``: look inside a .efb bundle file and check it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from fleet_protocol.bundle_file import read_bundle
from fleet_protocol.errors import BadDataError
from fleet_protocol.signing import PublicKey

from ..client import ApiClient
from ..errors import CliError
from ..options import JsonOpt, ServerOpt, TokenOpt
from ..output import console, print_json, print_table

app = typer.Typer(help="Inspect and verify signed bundle files (.efb).", no_args_is_help=True)

BundleArg = Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A .efb bundle file")]


@app.command()
def inspect(bundle: BundleArg, json_out: JsonOpt = False) -> None:
    """Show the manifest (digests and sizes are checked; the signature is not: use verify)."""
    try:
        envelope, manifest, _ = read_bundle(bundle.read_bytes(), trusted=None)
    except BadDataError as exc:
        raise CliError(f"{bundle}: {exc}") from None
    if json_out:
        print_json({"digest": manifest.digest, "manifest": manifest.to_dict(),
                    "signatures": [s.get("keyid") for s in envelope.get("signatures", [])]})
        return
    console.print(f"[bold]{manifest.module} v{manifest.version}[/bold]  runtime {manifest.runtime}  "
                  f"digest {manifest.digest[:16]}  created {manifest.created}")
    console.print(f"model {manifest.model}  entry {manifest.entry or '-'}  sample {manifest.sample or '-'}  "
                  f"model_ref {manifest.model_ref or '-'}")
    print_table("Files", ["path", "size", "sha256", "chunks"],
                [(f.path, f.size, f.sha256[:16], len(f.chunks)) for f in manifest.files])


@app.command()
def verify(
    bundle: BundleArg,
    key: Annotated[Optional[list[str]], typer.Option("--key", help="Trusted Ed25519 public key (hex), repeatable; "
                                                     "default: the server's signing keys")] = None,
    server: ServerOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """Check signature, digests and sizes; exit 1 with the reason if anything is off."""
    hex_keys = key or [k["public_key"] for k in ApiClient(server, token).get("/api/keys")["signing_keys"]]
    try:
        trusted = [PublicKey.from_hex(k) for k in hex_keys]
        envelope, manifest, files = read_bundle(bundle.read_bytes(), trusted)
    except BadDataError as exc:
        raise CliError(f"{bundle} is NOT valid: {exc}") from None
    result = {"valid": True, "module": manifest.module, "version": manifest.version, "digest": manifest.digest,
              "files": len(files), "signed_by": [s["keyid"] for s in envelope["signatures"]]}
    if json_out:
        print_json(result)
        return
    console.print(f"[green]valid[/green]: {manifest.module} v{manifest.version}, {len(files)} files, digests and "
                  f"sizes match, signed by {result['signed_by'][0][:12]}")
