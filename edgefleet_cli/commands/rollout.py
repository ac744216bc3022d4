"""``edgefleet deploy rollout``: staged rollouts (canary, waves, thresholds) and the operator's controls."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..client import ApiClient
from ..errors import CliError
from ..options import JsonOpt, MaxMemoryOpt, MaxP95Opt, ServerOpt, TokenOpt, gate_body
from ..output import console, format_tags, parse_tags, print_json, print_table
from ..polling import device_problems, wait_until
from .model import split_ref

app = typer.Typer(help="Staged rollouts: a canary, then waves, each gated on the devices running the new version.",
                  no_args_is_help=True)

FINAL = {"completed", "aborted", "rolled_back"}


@app.command()
def create(
    ref: Annotated[str, typer.Argument(help="MODULE or MODULE:VERSION (default: latest bundle)")],
    device: Annotated[Optional[list[str]], typer.Option("--device", "-d", help="Device id, repeatable")] = None,
    selector: Annotated[Optional[list[str]], typer.Option("--selector", "-s", help="tag=value[,tag=value]")] = None,
    group: Annotated[Optional[str], typer.Option("--group", "-g", help="A device group")] = None,
    priority: Annotated[int, typer.Option(help="Higher wins per module when deployments overlap")] = 0,
    canary: Annotated[Optional[int], typer.Option(help="Devices in the canary wave [default: 1]")] = None,
    canary_percent: Annotated[Optional[float], typer.Option(help="Canary as a percentage of the targets")] = None,
    wave_size: Annotated[Optional[int], typer.Option(help="Devices per later wave [default: all the rest]")] = None,
    wave_percent: Annotated[Optional[float], typer.Option(help="Later waves as a percentage of the targets")] = None,
    growth: Annotated[float, typer.Option(help="Each wave is this many times the previous")] = 1.0,
    rate: Annotated[Optional[float], typer.Option("--rate", help="At most this many devices let in per minute")] = None,
    success_percent: Annotated[float, typer.Option(help="Share of a wave running the version to advance")] = 100.0,
    max_failures: Annotated[Optional[int], typer.Option(help="Failed devices that stop the rollout [default: 1]")] = None,
    max_failure_percent: Annotated[Optional[float], typer.Option(help="...or this percentage of admitted devices")] = None,
    on_failure: Annotated[str, typer.Option(help="pause or abort when the error threshold is crossed")] = "pause",
    window: Annotated[float, typer.Option(help="Seconds a wave has to succeed before the rollout pauses")] = 600.0,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until the rollout completes, pauses or stops; exit 1 "
                                                      "with the reason unless it completed")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to --wait")] = 600.0,
    allow_empty: Annotated[bool, typer.Option("--allow-empty", help="Accept a selector or group that matches no "
                                                                    "device yet: the rollout waits for one")] = False,
    max_p95_ms: MaxP95Opt = None, max_memory_mb: MaxMemoryOpt = None,
    server: ServerOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """Start a staged rollout; the canary's devices get the new desired state at once."""
    module, version = split_ref(ref)
    target = parse_tags(selector)
    if not device and not target and not group:
        raise CliError("say where to roll out: --device ID, --selector tag=value or --group NAME", exit_code=2)
    plan = {"canary": canary, "canary_percent": canary_percent, "wave_size": wave_size, "wave_percent": wave_percent,
            "growth": growth, "max_devices_per_minute": rate, "success_percent": success_percent,
            "max_failures": max_failures, "max_failure_percent": max_failure_percent, "on_failure": on_failure,
            "wave_window_s": window}
    body = {"module": module, "version": version, "devices": device or None, "selector": target or None,
            "group": group, "priority": priority, "plan": {k: v for k, v in plan.items() if v is not None},
            "gate": gate_body(max_p95_ms, max_memory_mb), "allow_empty": allow_empty or None}
    client = ApiClient(server, token)
    rollout = client.post("/api/rollouts", json={k: v for k, v in body.items() if v is not None})
    if wait:
        rollout = _wait(client, rollout["id"], timeout, quiet=json_out)
    if json_out:
        print_json(rollout)
    elif not wait:
        print_rollout(rollout)
    if wait:
        _exit_unless_completed(rollout)


@app.command()
def status(
    rollout_id: Annotated[int, typer.Argument(help="Rollout id")],
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh until it completes, pauses or stops")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to --watch")] = 600.0,
    server: ServerOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """State, current wave and each device's state (with the error code and category of failures).

    With --watch, exit 1 with the reason unless the rollout completed."""
    client = ApiClient(server, token)
    rollout = _wait(client, rollout_id, timeout, quiet=json_out) if watch else client.get(f"/api/rollouts/{rollout_id}")
    if json_out:
        print_json(rollout)
    elif not watch:
        print_rollout(rollout)
    if watch:
        _exit_unless_completed(rollout)


@app.command("list")
def list_rollouts(server: ServerOpt = None, token: TokenOpt = None, json_out: JsonOpt = False) -> None:
    """Every rollout with its state and wave."""
    rollouts = ApiClient(server, token).get("/api/rollouts")
    if json_out:
        print_json(rollouts)
        return
    print_table("Rollouts", ["id", "module", "version", "state", "wave", "devices", "reason"],
                [(r["id"], r["deployment"]["module"], r["deployment"]["version"], r["state"], r["wave"],
                  _counts(r["counts"]), r.get("reason") or "") for r in rollouts])


@app.command()
def history(rollout_id: Annotated[int, typer.Argument(help="Rollout id")],
            server: ServerOpt = None, token: TokenOpt = None, json_out: JsonOpt = False) -> None:
    """The rollout's append-only history: creation, waves, pauses and operator actions."""
    events = ApiClient(server, token).get(f"/api/rollouts/{rollout_id}/history")
    if json_out:
        print_json(events)
        return
    print_table(f"Rollout {rollout_id} history", ["time", "event", "by", "detail"],
                [(e["ts"], e["kind"], e["actor"], _detail(e["detail"])) for e in events])


def _action(action: str, help_text: str):
    def command(rollout_id: Annotated[int, typer.Argument(help="Rollout id")],
                server: ServerOpt = None, token: TokenOpt = None, json_out: JsonOpt = False) -> None:
        rollout = ApiClient(server, token).post(f"/api/rollouts/{rollout_id}/{action}")
        print_json(rollout) if json_out else print_rollout(rollout)

    command.__doc__ = help_text
    app.command(name=action)(command)


_action("pause", "Stop letting devices in and stop advancing (what runs stays).")
_action("resume", "Continue a paused rollout; failures so far are acknowledged, the wave's window restarts.")
_action("abort", "End the rollout: no more devices are let in; devices keep what they run.")
_action("rollback", "Withdraw the rollout's deployment: its devices go back to the version they ran before.")


def _exit_unless_completed(rollout: dict) -> None:
    """After a wait: exit 1 when the rollout paused, aborted or was rolled back, with why and which devices failed."""
    if rollout["state"] == "completed":
        return
    problems = device_problems(rollout["devices"])
    raise CliError(f"rollout {rollout['id']} {rollout['state']}: {rollout.get('reason') or 'no reason given'}"
                   + (f"; {problems}" if problems else ""))


def _wait(client: ApiClient, rollout_id: int, timeout: float, *, quiet: bool) -> dict:
    def describe(rollout: dict) -> str:
        return f"rollout {rollout_id}: {rollout['state']}, wave {rollout['wave']} {_counts(rollout['counts'])}"

    return wait_until(lambda: client.get(f"/api/rollouts/{rollout_id}"), finished=lambda r: r["state"] != "running",
                      describe=describe, show=print_rollout, timeout=timeout, what=f"rollout {rollout_id}",
                      quiet=quiet)


def print_rollout(rollout: dict) -> None:
    deployment = rollout["deployment"]
    console.print(f"rollout [bold]{rollout['id']}[/bold]: {deployment['module']} v{deployment['version']} "
                  f"(deployment {deployment['id']})  state [bold]{rollout['state']}[/bold]  wave {rollout['wave']} "
                  f"of sizes {[len(w) for w in rollout['waves']]}  waiting {len(rollout['waiting'])}"
                  + (f"\n  reason: {rollout['reason']}" if rollout.get("reason") else ""), highlight=False)
    print_table("Devices", ["device", "wave", "state", "running version", "error"],
                [(d["device_id"], d["wave"], d["state"], d.get("version"), _error(d.get("error")))
                 for d in rollout["devices"]])


def _error(error: dict | None) -> str:
    return f"{error['category']}/{error['code']}: {error['message']}" if error else ""


def _counts(counts: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(counts.items()) if v)


def _detail(detail: dict) -> str:
    if "devices" in detail and isinstance(detail["devices"], list):
        return f"wave {detail.get('wave')}: {', '.join(detail['devices'])}"
    if "deployment" in detail:
        d = detail["deployment"]
        target = d["target"]
        where = ("devices " + ",".join(target["devices"])) if target.get("devices") else \
            "selector " + format_tags(target.get("selector"))
        return f"{d['module']} v{d['version']} → {where}"
    return ", ".join(f"{k}={v}" for k, v in detail.items() if k != "failures") + (
        f", failed: {', '.join(f['device_id'] for f in detail['failures'])}" if detail.get("failures") else "")
