"""``edgefleet deploy``: put a module version on devices and follow it."""

from __future__ import annotations

import time
from typing import Annotated, Optional

import typer

from ..client import ApiClient
from ..errors import CliError
from ..options import JsonOpt, ServerOpt, TokenOpt
from ..output import console, format_tags, parse_tags, print_json, print_table
from .model import split_ref

app = typer.Typer(help="Deploy module versions to devices (by id or tag selector) and watch their status.",
                  no_args_is_help=True)

FINAL_STATES = {"running", "failed", "superseded"}


@app.command()
def create(
    ref: Annotated[str, typer.Argument(help="MODULE or MODULE:VERSION (default: latest bundle)")],
    device: Annotated[Optional[list[str]], typer.Option("--device", "-d", help="Device id, repeatable")] = None,
    selector: Annotated[Optional[list[str]], typer.Option("--selector", "-s", help="tag=value[,tag=value]; "
                                                          "every tag must match")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until every device runs it or failed")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to --wait")] = 300.0,
    server: ServerOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """Create a deployment; the devices' desired state is published at once."""
    module, version = split_ref(ref)
    target = parse_tags(selector)
    if not device and not target:
        raise CliError("say where to deploy: --device ID (repeatable) or --selector tag=value", exit_code=2)
    body = {"module": module, "version": version, "devices": device or None, "selector": target or None}
    client = ApiClient(server, token)
    deployment = client.post("/api/deployments", json={k: v for k, v in body.items() if v is not None})
    if not json_out:
        console.print(f"deployment [bold]{deployment['id']}[/bold]: {deployment['module']} v{deployment['version']} "
                      f"(bundle {deployment['bundle_digest'][:12]})")
    if wait:
        deployment = _wait(client, deployment["id"], timeout, quiet=json_out)
    if json_out:
        print_json(deployment)


@app.command("list")
def list_deployments(server: ServerOpt = None, token: TokenOpt = None, json_out: JsonOpt = False) -> None:
    """List deployments, newest first."""
    records = ApiClient(server, token).get("/api/deployments")
    if json_out:
        print_json(records)
        return
    print_table("Deployments", ["id", "module", "version", "target", "created"],
                [(d["id"], d["module"], d["version"], _target(d.get("target") or {}), d["created"]) for d in records])


@app.command()
def status(
    deployment_id: Annotated[int, typer.Argument(help="Deployment id")],
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh until every device is done")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to --watch")] = 300.0,
    server: ServerOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """Per-device state of a deployment: pending, installing, running, failed (with the reason) or superseded."""
    client = ApiClient(server, token)
    deployment = _wait(client, deployment_id, timeout, quiet=json_out) if watch else \
        client.get(f"/api/deployments/{deployment_id}")
    if json_out:
        print_json(deployment)
        return
    _print_status(deployment)


def _wait(client: ApiClient, deployment_id: int, timeout: float, *, quiet: bool) -> dict:
    deadline = time.monotonic() + timeout
    with console.status("waiting for devices…", spinner="dots") as spinner:
        while True:
            deployment = client.get(f"/api/deployments/{deployment_id}")
            counts = deployment.get("counts", {})
            spinner.update(f"waiting for devices… {_counts(counts)}")
            devices = deployment.get("devices", [])
            if devices and all(d["state"] in FINAL_STATES for d in devices):
                break
            if time.monotonic() > deadline:
                if not quiet:
                    _print_status(deployment)
                raise CliError(f"deployment {deployment_id} not finished after {timeout:.0f}s: {_counts(counts)}")
            time.sleep(0.5)
    if not quiet:
        _print_status(deployment)
    return deployment


def _print_status(deployment: dict) -> None:
    console.print(f"deployment {deployment['id']}: {deployment['module']} v{deployment['version']} → "
                  f"{_target(deployment.get('target') or {})}   {_counts(deployment.get('counts', {}))}")
    print_table("Devices", ["device", "state", "running version", "error"],
                [(d["device_id"], d["state"], d.get("version"), _error(d.get("error")))
                 for d in deployment.get("devices", [])])


def _error(error: dict | None) -> str:
    return f"{error['category']}/{error['code']}: {error['message']}" if error else ""


def _counts(counts: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(counts.items()) if v)


def _target(target: dict) -> str:
    if target.get("devices"):
        return "devices " + ",".join(target["devices"])
    return "selector " + format_tags(target.get("selector"))
