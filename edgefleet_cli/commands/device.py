"""``edgefleet device``: the devices the server knows, with what they run."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..client import ApiClient
from ..options import JsonOpt, ServerOpt, TokenOpt
from ..output import format_tags, parse_tags, print_fields, print_json, print_table

app = typer.Typer(help="List and inspect devices.", no_args_is_help=True)


def _modules(device: dict) -> str:
    return ", ".join(f"{m['name']}:{m.get('version') or '-'}({m['state']})" for m in device.get("modules") or [])


@app.command("list")
def list_devices(
    tag: Annotated[Optional[list[str]], typer.Option("--tag", "-t", help="key=value, repeatable")] = None,
    status: Annotated[Optional[str], typer.Option(help="online, offline or unknown")] = None,
    server: ServerOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """List devices with status, profile, tags and modules."""
    tags = [f"{k}={v}" for k, v in parse_tags(tag).items()]
    records = ApiClient(server, token).request("GET", "/api/devices", params={
        k: v for k, v in {"tag": tags, "status": status}.items() if v})
    if json_out:
        print_json(records)
        return
    print_table("Devices", ["id", "status", "profile", "tags", "modules", "last seen"],
                [(d["id"], d["status"], d.get("profile"), format_tags(d.get("tags")), _modules(d), d.get("last_seen"))
                 for d in records])


@app.command()
def show(
    device_id: Annotated[str, typer.Argument(help="Device id")],
    server: ServerOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """Show one device: status, reported modules and errors."""
    device = ApiClient(server, token).get(f"/api/devices/{device_id}")
    if json_out:
        print_json(device)
        return
    print_fields(f"device {device_id}", {k: v for k, v in device.items() if k != "modules"})
    print_table("Modules", ["name", "state", "version", "accelerator", "error"],
                [(m["name"], m["state"], m.get("version"), m.get("accelerator"),
                  (m.get("error") or {}).get("message", "")) for m in device.get("modules") or []])
