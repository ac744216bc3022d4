"""``edgefleet device``: the devices the server knows, what they run and why; device groups."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..client import ApiClient
from ..errors import CliError
from ..options import JsonOpt, ServerOpt, TokenOpt
from ..output import console, format_tags, parse_tags, print_fields, print_json, print_table

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
                [(d["id"], _status(d), d.get("profile"), format_tags(d.get("tags")), _modules(d), d.get("last_seen"))
                 for d in records])


def _status(device: dict) -> str:
    """The connection status, marked stale when the device's desired state expired unrefreshed (freeze)."""
    stale = (device.get("reported") or {}).get("stale")
    return f"{device['status']} (stale)" if stale else device["status"]


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
    fields = {k: "–" if v is None else v for k, v in device.items() if k != "modules"}
    print_fields(f"device {device_id}", {**fields, "tags": format_tags(device.get("tags")) or "–"})
    print_table("Modules", ["name", "state", "version", "accelerator", "error"],
                [(m["name"], m["state"], m.get("version"), m.get("accelerator"),
                  (m.get("error") or {}).get("message", "")) for m in device.get("modules") or []])


@app.command()
def tag(
    device_id: Annotated[str, typer.Argument(help="Device id")],
    tags: Annotated[Optional[list[str]], typer.Argument(help="key=value to set, several allowed")] = None,
    remove: Annotated[Optional[list[str]], typer.Option("--remove", "-r", help="Tag key to remove, "
                                                                               "repeatable")] = None,
    server: ServerOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """Set or remove a device's tags (admin token); deployments by selector follow at once, fit checks included."""
    body = {"set": parse_tags(tags), "remove": list(remove or [])}
    if not body["set"] and not body["remove"]:
        raise CliError("give tags to set (key=value …) or --remove KEY", exit_code=2)
    report = ApiClient(server, token).post(f"/api/devices/{device_id}/tags", json=body)
    if json_out:
        print_json(report)
        return
    print_explain(report)


@app.command()
def explain(
    device_id: Annotated[str, typer.Argument(help="Device id")],
    server: ServerOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """Which deployment put each module version on the device, and why (priority, then newest); who lost."""
    report = ApiClient(server, token).get(f"/api/devices/{device_id}/explain")
    if json_out:
        print_json(report)
        return
    print_explain(report)


def print_explain(report: dict) -> None:
    """Per module: the winning deployment and why, what the device reports, and every deployment that lost."""
    if not report["modules"]:
        console.print(f"device {report['device_id']} ({format_tags(report['tags'])}): no deployment targets it",
                      highlight=False)
        return
    print_table(f"device {report['device_id']} ({format_tags(report['tags'])})",
                ["module", "version", "deployment", "priority", "why", "reported", "overridden"],
                [(m["module"], m["version"], m["deployment_id"], m["priority"], m["reason"],
                  f"v{m['reported_version']} {m['reported_state']}" if m["reported_state"] else "",
                  "; ".join(f"#{o['deployment_id']} v{o['version']}: {o['reason']}" for o in m["overridden"]))
                 for m in report["modules"]])


groups = typer.Typer(help="Named device groups: a device list and/or a tag selector, usable as a deployment target.",
                     no_args_is_help=True)
app.add_typer(groups, name="group")


@groups.command("create")
def create_group(
    name: Annotated[str, typer.Argument(help="Group name")],
    device: Annotated[Optional[list[str]], typer.Option("--device", "-d", help="Device id, repeatable")] = None,
    selector: Annotated[Optional[list[str]], typer.Option("--selector", "-s", help="tag=value[,tag=value]")] = None,
    server: ServerOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """Create a group; members by selector follow the devices' tags."""
    body = {"name": name, "devices": device or None, "selector": parse_tags(selector) or None}
    group = ApiClient(server, token).post("/api/groups", json=body)
    if json_out:
        print_json(group)
        return
    print_fields(f"group {name}", group)


@groups.command("list")
def list_groups(server: ServerOpt = None, token: TokenOpt = None, json_out: JsonOpt = False) -> None:
    """Every group with its current members."""
    records = ApiClient(server, token).get("/api/groups")
    if json_out:
        print_json(records)
        return
    print_table("Groups", ["name", "devices", "selector", "members"],
                [(g["name"], ",".join(g["devices"] or []), format_tags(g["selector"]), ",".join(g["members"]))
                 for g in records])


@app.command()
def enroll(
    name: Annotated[str, typer.Option("--name", help="The device id it will have (its certificate's CN)")],
    tag: Annotated[Optional[list[str]], typer.Option("--tags", "--tag", "-t", help="key=value, repeatable")] = None,
    ttl: Annotated[int, typer.Option("--ttl", help="Seconds the token stays valid")] = 24 * 3600,
    server: ServerOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """Create a one-time enrollment token for a device; give it to the install script or `edgefleet agent enroll`."""
    client = ApiClient(server, token)
    created = client.post("/api/enrollments", json={"device_id": name, "tags": parse_tags(tag), "ttl_s": ttl})
    if json_out:
        print_json(created)
        return
    print_fields(f"enrollment for {created['device_id']} (one use, until {created['expires']})",
                 {"token": created["token"]})
    print_fields("on the device", {
        "install": f"curl -fsSL {client.server}/install.sh | sudo sh -s -- --token {created['token']}",
        "or, with edgefleet installed": f"edgefleet agent enroll --server {client.server} --token {created['token']}"})


@app.command()
def revoke(
    device_id: Annotated[str, typer.Argument(help="Device id")],
    server: ServerOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """Revoke a device: its certificates go into the CRL, the broker reloads, it is given no modules."""
    result = ApiClient(server, token).post(f"/api/devices/{device_id}/revoke")
    if json_out:
        print_json(result)
        return
    print_fields(f"device {device_id} revoked", result)
    if not result["broker_reloaded"]:
        typer.echo("the server does not know the broker's pid (--broker-pid-file): reload Mosquitto (kill -HUP) "
                   "for the revocation to take effect", err=True)
