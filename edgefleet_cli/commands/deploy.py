"""``edgefleet deploy``: put a module version on devices and follow it; export and import definitions."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from fleet_protocol.fields import is_ascii_decimal

from ..client import ApiClient
from ..errors import CliError
from ..options import JsonOpt, MaxMemoryOpt, MaxP95Opt, ServerOpt, TokenOpt, gate_body
from ..output import console, format_tags, parse_tags, print_json, print_table
from ..polling import device_problems, wait_until
from . import rollout
from .model import split_ref

app = typer.Typer(help="Deploy module versions to devices (by id or tag selector) and watch their status.",
                  no_args_is_help=True)

app.add_typer(rollout.app, name="rollout")

FINAL_STATES = {"running", "failed", "superseded", "refused"}
EXPORT_FORMAT = "edgefleet-deployments/1"


@app.command()
def create(
    ref: Annotated[str, typer.Argument(help="MODULE or MODULE:VERSION (default: latest bundle)")],
    device: Annotated[Optional[list[str]], typer.Option("--device", "-d", help="Device id, repeatable")] = None,
    selector: Annotated[Optional[list[str]], typer.Option("--selector", "-s", help="tag=value[,tag=value]; "
                                                          "every tag must match")] = None,
    group: Annotated[Optional[str], typer.Option("--group", "-g", help="A device group (edgefleet device group)")] = None,
    priority: Annotated[int, typer.Option(help="Per module, the highest priority deployment wins, then the "
                                               "newest")] = 0,
    split: Annotated[Optional[list[str]], typer.Option("--split", help="A/B: VERSION=WEIGHT, repeatable; include "
                                                       "the deployed version")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until every device runs it or failed; exit 1 naming "
                                                      "the devices that failed or were refused")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to --wait")] = 300.0,
    allow_empty: Annotated[bool, typer.Option("--allow-empty", help="Accept a selector or group that matches no "
                                                                    "device yet (refused otherwise)")] = False,
    max_p95_ms: MaxP95Opt = None, max_memory_mb: MaxMemoryOpt = None,
    server: ServerOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """Create a deployment; every device's desired state is published at once (waves: `deploy rollout create`)."""
    module, version = split_ref(ref)
    target = parse_tags(selector)
    if not device and not target and not group:
        raise CliError("say where to deploy: --device ID (repeatable), --selector tag=value or --group NAME",
                       exit_code=2)
    body = {"module": module, "version": version, "devices": device or None, "selector": target or None,
            "group": group, "priority": priority, "split": _parse_split(split) or None,
            "gate": gate_body(max_p95_ms, max_memory_mb), "allow_empty": allow_empty or None}
    client = ApiClient(server, token)
    deployment = client.post("/api/deployments", json={k: v for k, v in body.items() if v is not None})
    if not json_out:
        console.print(f"deployment [bold]{deployment['id']}[/bold]: {deployment['module']} v{deployment['version']} "
                      f"(bundle {deployment['bundle_digest'][:12]})")
    if wait:
        deployment = _wait(client, deployment["id"], timeout, quiet=json_out)
    if json_out:
        print_json(deployment)
    if wait:
        _exit_unless_running(deployment)


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
    """Per-device state of a deployment: pending, installing, running, failed or refused (with the reason) or
    superseded. With --watch, exit 1 when a device failed or was refused."""
    client = ApiClient(server, token)
    deployment = _wait(client, deployment_id, timeout, quiet=json_out) if watch else \
        client.get(f"/api/deployments/{deployment_id}")
    if json_out:
        print_json(deployment)
    elif not watch:
        _print_status(deployment)
    if watch:
        _exit_unless_running(deployment)


@app.command()
def promote(
    deployment_id: Annotated[int, typer.Argument(help="The A/B deployment")],
    version: Annotated[int, typer.Argument(help="The winning version: it gets all the traffic")],
    server: ServerOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """End an A/B split: deploy the winner alone to the same target; the unversioned route follows it."""
    deployment = ApiClient(server, token).post(f"/api/deployments/{deployment_id}/promote", json={"version": version})
    if json_out:
        print_json(deployment)
        return
    console.print(f"deployment [bold]{deployment['id']}[/bold]: {deployment['module']} v{deployment['version']} "
                  f"gets all the traffic (replaces the split of deployment {deployment_id})")


@app.command()
def variants(
    deployment_id: Annotated[int, typer.Argument(help="The A/B deployment")],
    server: ServerOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """Per version of an A/B deployment: weight, requests (errors included), errors, latency (within 1 %), answers
    by class, labelled rows and accuracy with its Wilson 95 % interval (frozen once a version was promoted); then
    the verdict (see `edgefleet deploy verdict`)."""
    client = ApiClient(server, token)
    rows = client.get(f"/api/deployments/{deployment_id}/variants")
    if json_out:
        print_json(rows)
        return
    print_table(f"Deployment {deployment_id} variants", ["version", "weight", "devices", "requests", "errors",
                                                         "error rate", "p50 µs", "p95 µs", "p99 µs", "answers by class",
                                                         "labelled", "accuracy (95 % CI)"],
                [(r["version"], r["weight"], r["devices"], r["requests"], r["errors"], f"{r['error_rate']:.2%}",
                  r["latency_p50_us"], r["latency_p95_us"], r["latency_p99_us"],
                  " ".join(f"{k}:{v}" for k, v in sorted(r["outputs"].items())), r.get("labelled", 0),
                  _accuracy(r)) for r in rows])
    console.print(client.get(f"/api/deployments/{deployment_id}/verdict")["sentence"], highlight=False, markup=False, soft_wrap=True)


@app.command()
def verdict(
    deployment_id: Annotated[int, typer.Argument(help="The A/B deployment")],
    server: ServerOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """The A/B decision, one sentence per variant against the main version: "v3 is better at 95 %" only when the
    two-proportion z-test on labelled rows passes (Bonferroni across variants, at least 30 labelled rows each),
    else "not enough data yet: about N more requests needed" (80 % power); without labels, what errors and the
    class mix can and cannot tell. Labels come back through POST /v2/models/{name}/feedback."""
    result = ApiClient(server, token).get(f"/api/deployments/{deployment_id}/verdict")
    if json_out:
        print_json(result)
        return
    console.print(result["sentence"], highlight=False, markup=False, soft_wrap=True)  # one line at any width: scripts read it


def _accuracy(row: dict) -> str:
    if row.get("accuracy") is None:
        return "–"
    return f"{row['accuracy']:.1%} ({row['accuracy_low']:.1%}–{row['accuracy_high']:.1%})"


def _split_of(deployment: dict) -> dict[str, int]:
    split = deployment["split"]
    return {str(deployment["version"]): split["weight"], **{str(v["version"]): v["weight"] for v in split["variants"]}}


def _parse_split(values: list[str] | None) -> dict[str, int]:
    split = {}
    for value in values or ():
        version, sep, weight = value.partition("=")
        version, weight = version.strip(), weight.strip()
        if not sep or not all(is_ascii_decimal(part) for part in (version, weight)):
            raise CliError(f"--split {value!r} is not VERSION=WEIGHT (whole numbers)", exit_code=2)
        split[version] = int(weight)
    return split


@app.command("export")
def export(
    file: Annotated[Path, typer.Argument(help="JSON file to write ('-' for stdout)")],
    server: ServerOpt = None, token: TokenOpt = None,
) -> None:
    """Write the definitions of the deployments in force (rolled-back ones left out) as JSON."""
    client = ApiClient(server, token)
    plans = {r["deployment_id"]: r["plan"] for r in client.get("/api/rollouts")}
    definitions = [{"module": d["module"], "version": d["version"], "bundle_digest": d["bundle_digest"],
                    "devices": d["target"]["devices"], "selector": d["target"]["selector"],
                    "priority": d.get("priority", 0), **({"plan": plans[d["id"]]} if d["id"] in plans else {}),
                    **({"gate": d["fit"]["gate"]} if (d.get("fit") or {}).get("gate") else {}),
                    **({"split": _split_of(d)} if d.get("split") else {})}
                   for d in client.get("/api/deployments") if not d.get("withdrawn")]
    text = json.dumps({"format": EXPORT_FORMAT, "deployments": definitions}, indent=2, sort_keys=True) + "\n"
    if str(file) == "-":
        sys.stdout.write(text)
        return
    file.write_text(text)
    console.print(f"wrote {len(definitions)} deployment definition(s) to {file}")


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="JSON file written by `deploy export`")],
    allow_empty: Annotated[bool, typer.Option("--allow-empty", help="Accept definitions that match no device yet "
                                                                    "(e.g. a new server before its devices)")] = False,
    server: ServerOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """Create the deployments a `deploy export` file defines (those with a plan as staged rollouts), in order."""
    try:
        doc = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read {file}: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != EXPORT_FORMAT or not isinstance(doc.get("deployments"), list):
        raise CliError(f"{file} is not a `deploy export` file (format {EXPORT_FORMAT})")
    client = ApiClient(server, token)
    created = []
    for definition in doc["deployments"]:
        body = {k: v for k, v in definition.items() if v is not None}
        if allow_empty:
            body["allow_empty"] = True
        if "plan" in body:
            created.append({"rollout": client.post("/api/rollouts", json=body)["id"]})
        else:
            created.append({"deployment": client.post("/api/deployments", json=body)["id"]})
    if json_out:
        print_json(created)
    else:
        console.print(f"created {len(created)} deployment(s) from {file}: " +
                      ", ".join(f"{k} {v}" for c in created for k, v in c.items()))


def _exit_unless_running(deployment: dict) -> None:
    """After a wait: exit 1 naming each device that failed (error category/code) or that the fit check refused."""
    problems = device_problems(deployment.get("devices", []))
    if problems:
        raise CliError(f"deployment {deployment['id']} ({deployment['module']} v{deployment['version']}) did not "
                       f"reach every device: {problems}")


def _wait(client: ApiClient, deployment_id: int, timeout: float, *, quiet: bool) -> dict:
    def finished(deployment: dict) -> bool:
        devices = deployment.get("devices", [])
        return bool(devices) and all(d["state"] in FINAL_STATES for d in devices)

    return wait_until(lambda: client.get(f"/api/deployments/{deployment_id}"), finished=finished,
                      describe=lambda d: f"waiting for devices… {_counts(d.get('counts', {}))}",
                      show=_print_status, timeout=timeout, what=f"deployment {deployment_id}", quiet=quiet)


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
