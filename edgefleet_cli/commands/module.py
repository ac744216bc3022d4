"""``edgefleet module build``: turn a module folder into a signed bundle on the server."""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..client import ApiClient
from ..errors import CliError
from ..options import JsonOpt, ServerOpt, TokenOpt
from ..output import console, print_json

app = typer.Typer(help="Build module folders (model + entry script + module.json) into signed bundles.",
                  no_args_is_help=True)


def pack_module_folder(folder: Path) -> bytes:
    """A .tar.gz of ``module.json`` and the files it lists; refuses a folder without one."""
    manifest_path = folder / "module.json"
    if not manifest_path.is_file():
        raise CliError(f"{folder} has no module.json (see modules/iris-classifier for an example)")
    try:
        spec = json.loads(manifest_path.read_text())
        files = list(spec["files"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CliError(f"{manifest_path} is not valid: {exc}") from None
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name in ["module.json", *files]:
            path = folder / name
            if not path.is_file():
                raise CliError(f"{manifest_path} lists {name!r}, which is not a file in {folder}")
            tar.add(path, arcname=name, recursive=False)
    return buffer.getvalue()


def build_module(client: ApiClient, folder: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / f"{folder.resolve().name}.tar.gz"
        archive.write_bytes(pack_module_folder(folder))
        return client.upload("/api/bundles/from-module", archive, label=f"uploading {folder.name}")


@app.command()
def build(
    folder: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="A module folder with module.json")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Also save the signed bundle (.efb) here")] = None,
    server: ServerOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """Upload the folder; the server assigns the next version, signs the bundle and stores it."""
    client = ApiClient(server, token)
    bundle = build_module(client, folder)
    if out is not None:
        out.write_bytes(client.request("GET", f"/api/bundles/{bundle['digest']}/file"))
    if json_out:
        print_json(bundle)
        return
    console.print(f"built [bold]{bundle['module']} v{bundle['version']}[/bold] bundle {bundle['digest'][:12]} "
                  f"({bundle['size']} bytes)" + (f", saved to {out}" if out else ""))
