"""``edgefleet telemetry``: the fleet's telemetry, as raw records or minute/hour rollups (``GET /api/telemetry``)."""

from __future__ import annotations

import json
from enum import Enum
from typing import Annotated, Optional

import typer

from ..client import ApiClient
from ..options import JsonOpt, ServerOpt, TokenOpt
from ..output import print_json, print_table


class Resolution(str, Enum):
    auto = "auto"
    raw = "raw"
    minute = "minute"
    hour = "hour"


def telemetry(
    device: Annotated[Optional[str], typer.Option("--device", help="Only this device")] = None,
    kind: Annotated[Optional[str], typer.Option(help="Raw records of this kind only (heartbeat, model_stats, "
                                                     "event, fallback)")] = None,
    model: Annotated[Optional[str], typer.Option(help="Rollups of this model only")] = None,
    since: Annotated[Optional[str], typer.Option(help="From this time: ISO time or a span back from now "
                                                      "(30m, 6h, 7d)")] = None,
    until: Annotated[Optional[str], typer.Option(help="Up to this time (ISO time or span back)")] = None,
    resolution: Annotated[Resolution, typer.Option(help="raw records, or minute or hour rollups; auto: raw unless "
                                                        "--since reaches past the server's raw retention, then "
                                                        "the finest rollups kept that far back")] = Resolution.auto,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many rows")] = 100,
    server: ServerOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """Show telemetry, newest first: raw records, or per device, model version and minute/hour what they added up
    to (requests, errors, fallbacks, latency percentiles, heartbeats)."""
    rows = ApiClient(server, token).get("/api/telemetry", device_id=device, kind=kind, model=model, since=since,
                                        until=until, resolution=resolution.value, limit=limit)
    if json_out:
        print_json(rows)
        return
    if rows and "bucket" in rows[0]:
        _rollup_table(rows)
        return
    print_table("Telemetry (raw records)", ["when", "device", "kind", "data"],
                [(r["ts"], r["device_id"], r["kind"], _short(json.dumps(r["data"], sort_keys=True))) for r in rows])


def _rollup_table(rows: list[dict]) -> None:
    def latency(row: dict) -> str:
        lat = row["latency_us"]
        return "" if lat is None else " / ".join(f"{lat[q] / 1000:.1f}" for q in ("p50", "p95", "p99"))

    print_table(f"Telemetry ({rows[0]['resolution']} rollups)",
                ["bucket", "device", "model", "records", "requests", "errors", "fallbacks", "p50/p95/p99 ms",
                 "heartbeats", "cpu % avg/max"],
                [(r["bucket"], r["device_id"], f"{r['model']}:{r['version']}" if r["model"] else "(device)",
                  r["records"], r["requests"], r["errors"], r["fallbacks"], latency(r), r["heartbeats"],
                  f"{r['cpu_percent_avg']}/{r['cpu_percent_max']}" if r["heartbeats"] else "") for r in rows])


def _short(text: str, width: int = 80) -> str:
    return text if len(text) <= width else text[:width - 3] + "..."
