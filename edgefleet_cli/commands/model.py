"""``edgefleet model``: the model registry (register, list, show, delete)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..client import ApiClient
from ..errors import CliError
from ..options import JsonOpt, ServerOpt, TokenOpt
from ..output import console, format_tags, parse_tags, print_fields, print_json, print_table

app = typer.Typer(help="Register models and browse the registry (name, auto-incremented versions, tags).",
                  no_args_is_help=True)


def split_ref(ref: str) -> tuple[str, int | None]:
    """``iris`` → ``("iris", None)``; ``iris:3`` → ``("iris", 3)``."""
    name, sep, version = ref.partition(":")
    if not sep:
        return name, None
    if not version.isdigit():
        raise CliError(f"{ref!r} is not NAME or NAME:VERSION (VERSION is a number)", exit_code=2)
    return name, int(version)


@app.command()
def register(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="ONNX (.onnx) or TFLite (.tflite) model")],
    name: Annotated[str, typer.Option("--name", "-n", help="Registry name; each registration gets the next version")],
    tag: Annotated[Optional[list[str]], typer.Option("--tag", "-t", help="key=value, repeatable")] = None,
    prop: Annotated[Optional[list[str]], typer.Option("--property", "-p", help="key=value, repeatable")] = None,
    server: ServerOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """Upload a model file; the server reads its runtime, inputs and outputs."""
    fields = {"tags": json.dumps(parse_tags(tag)), "properties": json.dumps(parse_tags(prop))}
    record = ApiClient(server, token).upload(f"/api/models/{name}", file, fields=fields, label=f"uploading {file.name}")
    if json_out:
        print_json(record)
        return
    console.print(f"registered [bold]{record['name']}:{record['version']}[/bold] ({record['runtime']}, "
                  f"{record['size']} bytes, sha256 {record['sha256'][:12]})")


@app.command("list")
def list_models(
    name: Annotated[Optional[str], typer.Option(help="Only this name")] = None,
    query: Annotated[Optional[str], typer.Option("--query", "-q", help="Name contains")] = None,
    tag: Annotated[Optional[list[str]], typer.Option("--tag", "-t", help="key=value, repeatable")] = None,
    server: ServerOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """List models (latest version of each name), filtered by name, substring or tags."""
    tags = [f"{k}={v}" for k, v in parse_tags(tag).items()]
    records = ApiClient(server, token).request("GET", "/api/models", params={
        k: v for k, v in {"name": name, "q": query, "tag": tags}.items() if v})
    if json_out:
        print_json(records)
        return
    print_table("Models", ["name", "latest", "runtime", "size", "tags", "created"],
                [(r["name"], r["version"], r["runtime"], r["size"], format_tags(r.get("tags")), r["created"])
                 for r in records])


@app.command()
def show(
    ref: Annotated[str, typer.Argument(help="NAME (all versions) or NAME:VERSION")],
    server: ServerOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """Show a model's versions, or one version with its inputs and outputs."""
    name, version = split_ref(ref)
    client = ApiClient(server, token)
    if version is None:
        records = client.get(f"/api/models/{name}")
        if json_out:
            print_json(records)
            return
        print_table(f"Model {name}", ["version", "runtime", "size", "sha256", "tags", "created"],
                    [(r["version"], r["runtime"], r["size"], r["sha256"][:12], format_tags(r.get("tags")),
                      r["created"]) for r in records])
        return
    record = client.get(f"/api/models/{name}/versions/{version}")
    if json_out:
        print_json(record)
        return
    print_fields(f"{name}:{version}", record)


@app.command()
def delete(
    ref: Annotated[str, typer.Argument(help="NAME:VERSION")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation")] = False,
    server: ServerOpt = None, token: TokenOpt = None,
) -> None:
    """Delete a model version (refused while a deployment uses it)."""
    name, version = split_ref(ref)
    if version is None:
        raise CliError("give the version to delete as NAME:VERSION", exit_code=2)
    if not yes and not typer.confirm(f"Delete {name}:{version}?"):
        raise CliError("not deleted", exit_code=1)
    ApiClient(server, token).request("DELETE", f"/api/models/{name}/versions/{version}")
    console.print(f"deleted {name}:{version}")
