"""``edgefleet job``: run a signed remote job on devices (fixed kinds, no shell) and read its results."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from fleet_protocol.fields import is_ascii_decimal
from fleet_protocol.jobs import KINDS, MAX_LOG_BYTES

from ..client import ApiClient
from ..errors import CliError
from ..options import JsonOpt, ServerOpt, TokenOpt
from ..output import console, format_tags, parse_tags, print_json, print_table
from ..polling import wait_until

app = typer.Typer(help="Remote jobs: restart a module, re-run its health check, collect logs, diagnostics, flush the "
                       "outbox. Signed, bound to each device, run once per device; staged with --rate and stopped by "
                       "--abort-after-failures.", no_args_is_help=True)

NEEDS_MODULE = ("restart_module", "health_check")
SELECTOR_HELP = ("Which devices, as `deploy` targets them: tag=value[,tag=value] (every tag must match), "
                 "device=ID[,device=ID] (device ids), group=NAME, or all")


def parse_selector(text: str) -> dict:
    """``site=lab,tier=a`` → selector; ``device=a,device=b`` → devices; ``group=g``; ``all`` → every device."""
    if text.strip() == "all":
        return {"selector": {}}
    devices, group, tags = [], None, {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = pair.partition("=")
        if key == "device" and sep and value:
            devices.append(value)
        elif key == "group" and sep and value:
            group = value
        else:
            tags.update(parse_tags([pair]))
    if not (devices or group or tags):
        raise CliError(f"selector {text!r} names no device: give tag=value, device=ID, group=NAME or all", exit_code=2)
    return {"devices": devices or None, "selector": tags or None, "group": group}


def parse_rate(text: str | None) -> float | None:
    """``10/min`` or ``10`` → 10.0 devices per minute."""
    if text is None:
        return None
    number = text.removesuffix("/min").strip()
    whole, _, fraction = number.partition(".")
    if not is_ascii_decimal(whole) or (fraction and not is_ascii_decimal(fraction)) or float(number) <= 0:
        raise CliError(f"--rate {text!r} must be a positive number of devices per minute, like 10/min", exit_code=2)
    return float(number)


@app.command()
def run(
    selector: Annotated[str, typer.Argument(help=SELECTOR_HELP, show_default=False)],
    kind: Annotated[str, typer.Argument(help=f"One of: {', '.join(KINDS)}", show_default=False)],
    module: Annotated[Optional[str], typer.Option(help="The module (restart_module, health_check)")] = None,
    max_bytes: Annotated[Optional[int], typer.Option(help=f"collect_logs: newest log bytes to return "
                                                          f"(default and most: {MAX_LOG_BYTES})")] = None,
    rate: Annotated[Optional[str], typer.Option("--rate", help="Send to at most N devices per minute (N/min); "
                                                               "default: all at once")] = None,
    abort_after_failures: Annotated[Optional[int], typer.Option(
        "--abort-after-failures", min=1, help="After N devices failed (or did not answer), cancel the rest")] = None,
    ttl: Annotated[int, typer.Option(help="Seconds each device has to answer before it counts as timed out")] = 3600,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until every device answered (or the job stopped); exit "
                                                      "1 naming the devices that failed")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to --wait")] = 300.0,
    server: ServerOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """Run a job on the devices SELECTOR matches now; each gets its own signed job document."""
    if kind not in KINDS:
        raise CliError(f"job {kind!r} is not one of {', '.join(KINDS)}", exit_code=2)
    if (module is None) == (kind in NEEDS_MODULE):
        raise CliError(f"{kind} needs --module NAME" if module is None else f"{kind} takes no --module", exit_code=2)
    if max_bytes is not None and kind != "collect_logs":
        raise CliError("--max-bytes is for collect_logs only", exit_code=2)
    params = {"module": module} if module else ({"max_bytes": max_bytes} if max_bytes is not None else {})
    body = {"kind": kind, "params": params, **parse_selector(selector), "rate_per_minute": parse_rate(rate),
            "abort_after_failures": abort_after_failures, "ttl_s": ttl}
    client = ApiClient(server, token)
    job = client.post("/api/jobs", json={k: v for k, v in body.items() if v is not None})
    if wait:
        job = _wait(client, job["id"], timeout, quiet=json_out)
    if json_out:
        print_json(job)
    elif not wait:
        print_job(job)
    if wait:
        _exit_unless_all_succeeded(job)


@app.command("list")
def list_jobs(server: ServerOpt = None, token: TokenOpt = None, json_out: JsonOpt = False) -> None:
    """Every job with its state and per-device counts."""
    jobs = ApiClient(server, token).get("/api/jobs")
    if json_out:
        print_json(jobs)
        return
    print_table("Jobs", ["id", "kind", "target", "state", "devices", "reason", "created"],
                [(j["id"], _kind(j), _target(j["target"]), j["state"], _counts(j["counts"]), j.get("reason") or "",
                  j["created"]) for j in jobs])


@app.command()
def show(
    job_id: Annotated[int, typer.Argument(help="Job id")],
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh until every device answered")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to --watch")] = 300.0,
    server: ServerOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """Each device's state and result: diagnostics, the collected log lines, or the error's code and reason."""
    client = ApiClient(server, token)
    job = _wait(client, job_id, timeout, quiet=json_out) if watch else client.get(f"/api/jobs/{job_id}")
    if json_out:
        print_json(job)
    elif not watch:
        print_job(job)
    if watch:
        _exit_unless_all_succeeded(job)


@app.command()
def cancel(
    job_id: Annotated[int, typer.Argument(help="Job id")],
    server: ServerOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """Stop a job: devices not sent yet are cancelled; a device already sent it may still answer (or time out).
    Operator or admin; audited."""
    job = ApiClient(server, token).post(f"/api/jobs/{job_id}/cancel")
    if json_out:
        print_json(job)
    else:
        print_job(job)


def _wait(client: ApiClient, job_id: int, timeout: float, *, quiet: bool) -> dict:
    return wait_until(lambda: client.get(f"/api/jobs/{job_id}"), finished=lambda j: j["state"] != "running",
                      describe=lambda j: f"job {job_id}: {j['state']} {_counts(j['counts'])}", show=print_job,
                      timeout=timeout, what=f"job {job_id}", quiet=quiet)


def _exit_unless_all_succeeded(job: dict) -> None:
    bad = [d for d in job["devices"] if d["state"] not in ("succeeded", "cancelled")]
    cancelled = [d["device_id"] for d in job["devices"] if d["state"] == "cancelled"]
    if job["state"] == "completed" and not bad:
        return
    problems = "; ".join([f"{d['device_id']} {d['state']}" + (f" ({d['error']['code']}: {d['error']['message']})"
                                                             if d.get("error") else "") for d in bad]
                         + ([f"cancelled: {', '.join(cancelled)}"] if cancelled else []))
    raise CliError(f"job {job['id']} {job['state']}" + (f": {job['reason']}" if job.get("reason") else "")
                   + (f"; {problems}" if problems else ""))


def print_job(job: dict) -> None:
    console.print(f"job [bold]{job['id']}[/bold] ({job['wire_id']}): {_kind(job)} on {_target(job['target'])}  "
                  f"state [bold]{job['state']}[/bold]  {_counts(job['counts'])}"
                  + (f"\n  reason: {job['reason']}" if job.get("reason") else ""), highlight=False)
    print_table("Devices", ["device", "state", "finished", "result"],
                [(d["device_id"], d["state"], d["finished"], _summary(job["kind"], d)) for d in job["devices"]])
    for device in job["devices"]:
        if job["kind"] == "collect_logs" and device.get("result"):
            console.rule(f"{device['device_id']}: last {device['result']['bytes']} bytes of log")
            console.print(device["result"]["text"], markup=False, highlight=False, end="")


def _summary(kind: str, device: dict) -> str:
    if device.get("error"):
        return f"{device['error']['category']}/{device['error']['code']}: {device['error']['message']}"
    result = device.get("result")
    if not result:
        return ""
    if kind == "diagnostics":
        memory, disk = result["memory"], result["disk"]
        return (f"providers {','.join(result['providers'])}; memory {memory['available_bytes'] >> 20}/"
                f"{memory['total_bytes'] >> 20} MiB free; disk {disk['free_bytes'] >> 20} MiB free; "
                f"agent {result['versions']['agent']}, onnxruntime {result['versions']['onnxruntime']}; "
                f"clock skew {result['clock_skew_s']} s")
    if kind == "collect_logs":
        return f"{result['bytes']} bytes of log (below)"
    return ", ".join(f"{k}={v}" for k, v in sorted(result.items()))


def _kind(job: dict) -> str:
    params = ",".join(f"{k}={v}" for k, v in sorted(job["params"].items()))
    return job["kind"] + (f" {params}" if params else "")


def _target(target: dict) -> str:
    if target.get("group"):
        return f"group {target['group']}"
    parts = []
    if target.get("devices"):
        parts.append("devices " + ",".join(target["devices"]))
    if target.get("selector") is not None:
        parts.append("selector " + (format_tags(target["selector"]) or "(all)"))
    return " or ".join(parts)


def _counts(counts: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in counts.items() if v)
