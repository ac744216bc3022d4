"""``edgefleet module build``: turn a module folder into a signed bundle on the server (``--image``: and a
Docker image serving it, see :mod:`fleet_server.container`); ``--kind agent``: a folder of wheels into a
bundle of a new agent version, which devices install into a new environment of their own."""

from __future__ import annotations

import io
import tarfile
import tempfile
from pathlib import Path
from typing import Annotated, Optional

import typer

from fleet_protocol.errors import BadDataError
from fleet_server.module_archive import parse_module_spec

from ..client import ApiClient
from ..errors import CliError
from ..options import JsonOpt, ServerOpt, TokenOpt
from ..output import console, print_json

app = typer.Typer(help="Build module folders (model + entry script + module.json) into signed bundles.",
                  no_args_is_help=True)


def pack_module_folder(folder: Path) -> bytes:
    """A .tar.gz of ``module.json`` and the files it lists; refuses a folder without one, or with a bad one."""
    manifest_path = folder / "module.json"
    if not manifest_path.is_file():
        raise CliError(f"{folder} has no module.json (see modules/iris-classifier for an example)")
    try:  # the server's own parser, so a typo is refused before the upload
        spec = parse_module_spec(manifest_path.read_bytes())
    except BadDataError as exc:
        raise CliError(f"{folder}: {exc}") from None
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name in ["module.json", *spec.files]:
            path = folder / name
            if not path.is_file():
                raise CliError(f"{manifest_path} lists {name!r}, which is not a file in {folder}")
            tar.add(path, arcname=name, recursive=False)
    return buffer.getvalue()


def pack_wheels_folder(folder: Path) -> bytes:
    """A .tar.gz of the folder's ``*.whl`` files; refuses a folder without exactly one ``edgefleet-*.whl``."""
    wheels = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix == ".whl")
    own = [p.name for p in wheels if p.name.startswith("edgefleet-")]
    if len(own) != 1:
        raise CliError(f"{folder} must hold exactly one edgefleet-*.whl (the agent; build it with `pip wheel "
                       f"--no-deps .`), found {len(own)}, beside the wheels of its dependencies")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in wheels:
            tar.add(path, arcname=path.name, recursive=False)
    return buffer.getvalue()


def build_agent(client: ApiClient, folder: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "agent-wheels.tar.gz"
        archive.write_bytes(pack_wheels_folder(folder))
        return client.upload("/api/bundles/agent", archive, label=f"uploading the wheels in {folder.name}")


def build_module(client: ApiClient, folder: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / f"{folder.resolve().name}.tar.gz"
        archive.write_bytes(pack_module_folder(folder))
        return client.upload("/api/bundles/from-module", archive, label=f"uploading {folder.name}")


@app.command()
def build(
    folder: Annotated[Path, typer.Argument(exists=True, file_okay=False,
                                           help="A module folder with module.json (--kind agent: a folder of wheels)")],
    kind: Annotated[str, typer.Option("--kind", help="module: a model bundle; agent: a new agent version, from the "
                                                     "wheels of edgefleet and its agent extra for the devices' "
                                                     "platform (one edgefleet-*.whl among them), rolled out like a "
                                                     "module")] = "module",
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Also save the signed bundle (.efb) here")] = None,
    image: Annotated[bool, typer.Option("--image", help="Also write a Docker build context serving the bundle, "
                                                        "and build it when a Docker engine is reachable")] = False,
    context_out: Annotated[Optional[Path], typer.Option("--context-out", file_okay=False,
                                                        help="Where to write the build context "
                                                             "[default: ./MODULE-vVERSION-image]")] = None,
    tag: Annotated[Optional[str], typer.Option("--tag", help="Image tag [default: edgefleet/MODULE:VERSION]")] = None,
    key: Annotated[Optional[str], typer.Option("--key", help="Signing public key (hex) the image verifies the "
                                                             "bundle with [default: the server's, `edgefleet keys show`]")
                   ] = None,
    wheel: Annotated[Optional[Path], typer.Option("--wheel", exists=True, dir_okay=False,
                                                  help="Install edgefleet from this wheel instead of the index")
                     ] = None,
    server: ServerOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """Upload the folder; the server assigns the next version, signs the bundle and stores it."""
    if kind not in ("module", "agent"):
        raise CliError(f"--kind must be module or agent, not {kind!r}")
    if kind == "agent" and image:
        raise CliError("--image builds a model-serving image; an agent bundle has no model to serve")
    client = ApiClient(server, token)
    bundle = build_agent(client, folder) if kind == "agent" else build_module(client, folder)
    data = client.request("GET", f"/api/bundles/{bundle['digest']}/file") if out or image else None
    if out is not None:
        out.write_bytes(data)
    if not json_out:
        console.print(f"built [bold]{bundle['module']} v{bundle['version']}[/bold] bundle {bundle['digest'][:12]} "
                      f"({bundle['size']} bytes)" + (f", saved to {out}" if out else ""))
    if image:
        bundle["image"] = _package(client, bundle, data, context_out=context_out, tag=tag, key=key, wheel=wheel)
    if json_out:
        print_json(bundle)


def _package(client: ApiClient, bundle: dict, data: bytes, *, context_out: Path | None, tag: str | None,
             key: str | None, wheel: Path | None) -> dict:
    """Write the Docker build context and build it; a missing engine is an error after the context is written."""
    from fleet_server.container import EngineUnavailable, build_image, write_build_context

    key = key or client.get("/api/keys")["signing_keys"][0]["public_key"]
    context = write_build_context(context_out or Path(f"{bundle['module']}-v{bundle['version']}-image"),
                                  bundle=data, key_hex=key, wheel=wheel)
    tag = tag or f"edgefleet/{bundle['module']}:{bundle['version']}"
    console.print(f"build context written to {context}", soft_wrap=True, highlight=False)
    try:
        image_id = build_image(context, tag=tag)
    except EngineUnavailable as exc:
        raise CliError(str(exc)) from None
    console.print(f"built image [bold]{tag}[/bold] ({image_id[:19]})")
    return {"context": str(context), "tag": tag, "id": image_id}
