"""``edgefleet simulate``: many virtual devices running the real agent code against a broker and a server.

Spreads ``--devices`` over ``--processes`` worker processes (one MQTT loop
each, see :mod:`simulators.processes`), prints a progress line every second
(or one JSON object per line with ``--json``) and a summary at the end
(after ``--duration`` seconds, or on Ctrl-C). Each device keeps its state in
``--dir/<device id>``, so a second run with the same ``--dir`` resumes the
same devices with what they installed.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from simulators.faults import FaultPlan
from simulators.processes import FleetProcesses, FleetSpec, device_ids

from ..errors import CliError, require_extra
from ..output import console, print_fields


def parse_profiles(text: str) -> list[tuple[str, float]]:
    """``generic-cpu:0.7,raspberry-pi-5:0.3`` (a name without a weight weighs 1)."""
    profiles = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, weight = item.partition(":")
        try:
            value = float(weight) if weight else 1.0
        except ValueError:
            raise CliError(f"--profiles: weight of {name!r} is not a number: {weight!r}", exit_code=2) from None
        if value <= 0:
            raise CliError(f"--profiles: weight of {name!r} must be positive", exit_code=2)
        profiles.append((name, value))
    if not profiles:
        raise CliError("--profiles needs at least one NAME[:WEIGHT]", exit_code=2)
    return profiles


def _pairs(values: list[str] | None, option: str) -> dict[str, str]:
    pairs = {}
    for value in values or []:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise CliError(f"{option} expects KEY=VALUE, got {value!r}", exit_code=2)
        pairs[key.strip()] = val.strip()
    return pairs


def _number(text: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def simulate(
    devices: Annotated[int, typer.Option("--devices", "-n", min=1, help="How many simulated devices")],
    broker: Annotated[str, typer.Option("--broker", help="Broker URL the devices connect to (mqtt://host:port)")],
    trusted_key: Annotated[list[str], typer.Option("--trusted-key", help="Server signing key, hex "
                                                   "(`edgefleet keys show`); repeatable")],
    profiles: Annotated[str, typer.Option(help="Firmware profiles with weights")] = "generic-cpu:1",
    processes: Annotated[Optional[int], typer.Option(min=1, help="Worker processes [default: CPU cores]",
                                                     show_default=False)] = None,
    fault: Annotated[Optional[list[str]], typer.Option(
        "--fault", help="drop=0.01, delay=50ms, partition=30s@60s, crash=0.001/s, disk-full=ID[,ID], "
                        "slow-accelerator=3x; repeatable")] = None,
    seed: Annotated[int, typer.Option(help="Seed of every random choice (profiles, faults)")] = 0,
    duration: Annotated[Optional[float], typer.Option(min=0, help="Seconds to run [default: until Ctrl-C]",
                                                      show_default=False)] = None,
    workdir: Annotated[Path, typer.Option("--dir", help="State directories of the devices")] = Path(".simulate"),
    prefix: Annotated[str, typer.Option(help="Device ids are PREFIX-00000, PREFIX-00001, ...")] = "sim",
    tag: Annotated[Optional[list[str]], typer.Option("--tag", help="KEY=VALUE device tag; repeatable")] = None,
    setting: Annotated[Optional[list[str]], typer.Option(
        "--set", help="Agent setting KEY=VALUE, e.g. heartbeat_interval_s=30; repeatable")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object per line (progress, then the summary)")]
    = False,
) -> None:
    """Run N simulated devices (real agent code, own state each) until --duration or Ctrl-C."""
    require_extra("agent")
    if "EDGEFLEET_LOG_LEVEL" not in os.environ:
        logging.getLogger().setLevel(logging.WARNING)
    try:
        FaultPlan.parse(fault or [])
    except ValueError as exc:
        raise CliError(str(exc), exit_code=2) from None
    settings = {key: _number(value) for key, value in _pairs(setting, "--set").items()}
    spec = FleetSpec(broker_url=broker, trusted_keys=list(trusted_key), root_dir=workdir.resolve(),
                     device_ids=device_ids(devices, prefix), profiles=parse_profiles(profiles),
                     tags=_pairs(tag, "--tag"), settings=settings, faults=list(fault or []), seed=seed)
    _check_settings(spec)
    fleet = FleetProcesses(spec, processes or os.cpu_count() or 1)
    fleet.start()
    live = not json_out and sys.stdout.isatty()
    stats: dict = {}
    try:
        while duration is None or time.monotonic() - fleet.started_at < duration:
            stats = fleet.poll(timeout_s=1.0)
            if json_out:
                print(json.dumps({"event": "progress", **stats}, sort_keys=True), flush=True)
            elif live:
                console.print(_line(stats), end="\r", highlight=False, markup=False)
            if stats["failed_workers"]:
                break
    except KeyboardInterrupt:
        pass
    final = fleet.stop()
    final["connected_at_end"] = stats.get("connected", 0)
    if json_out:
        print(json.dumps({"event": "summary", **final}, sort_keys=True), flush=True)
    else:
        if live:
            console.print()
        print_fields("simulation summary", {
            "devices": final["devices_total"], "processes": final["processes"],
            "connected at the end": final["connected_at_end"],
            "all connected after": f"{final['all_connected_s']} s" if final["all_connected_s"] is not None else "never",
            "modules": final["modules"] or "none", "telemetry records sent": final["telemetry_sent"],
            "outbox pending": final["outbox_pending"], "messages dropped": final["dropped_messages"],
            "crashes": final["crashes"], "partitions": final["partitions"], "memory (RSS, all workers)": f"{final['rss_bytes'] / 2**20:.0f} MiB",
            "ran for": f"{final['elapsed_s']} s"})
    if final["failed_workers"]:
        raise CliError(f"worker process(es) failed: {', '.join(final['failed_workers'])} (see the log above)")


def _check_settings(spec: FleetSpec) -> None:
    """Fail on a bad agent setting or broker URL before starting any process."""
    from dataclasses import fields

    from edge_agent.config import AgentConfig, ConfigError
    from fleet_protocol.errors import MessageError
    from fleet_protocol.fields import refuse_unknown_keys

    try:
        refuse_unknown_keys(spec.settings, (f.name for f in fields(AgentConfig)), where="--set")
        AgentConfig(device_id=spec.device_ids[0], state_dir=spec.root_dir, broker_url=spec.broker_url,
                    trusted_keys=spec.trusted_keys, tags=spec.tags, **spec.settings)
    except (ConfigError, MessageError, TypeError) as exc:
        raise CliError(f"bad setting: {exc}", exit_code=2) from None


def _line(stats: dict) -> str:
    modules = ", ".join(f"{k} ×{v}" for k, v in stats["modules"].items()) or "no modules"
    return (f"{stats['elapsed_s']:>7.1f}s  connected {stats['connected']}/{stats['devices_total']}  {modules}  "
            f"telemetry {stats['telemetry_sent']}  outbox {stats['outbox_pending']}  "
            f"crashes {stats['crashes']}  RSS {stats['rss_bytes'] / 2**20:.0f} MiB")
