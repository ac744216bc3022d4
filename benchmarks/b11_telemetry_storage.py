"""B11: telemetry storage per device per day, raw vs minute and hour rollups, on SQLite and PostgreSQL.

Each simulated device reports as the agent does at a 60 s telemetry
interval: every minute one ``heartbeat`` and one ``model_stats`` record for
one model version (requests, errors, a latency sketch of about 20 buckets,
p50/p95/p99), i.e. 2,880 raw records per device per day, stored through the
server's own ingest function in batches of 30 (the records of half an hour,
as an outbox flush after a short outage sends them). Then the retention step
rolls everything up (:class:`fleet_server.retention.TelemetryRetention`).

Sizes are the engines' own accounting of each table with its indexes:
SQLite's ``dbstat`` (pages of the table's and its indexes' b-trees), and
PostgreSQL's ``pg_total_relation_size`` (heap, indexes, TOAST), each after a
``VACUUM``. Raw telemetry is measured before the roll-up: marking every row
rolled leaves a dead version of each on PostgreSQL, which (auto)vacuum hands
back for reuse by the next rows, so it is not a per-day cost
(``telemetry_after_rollup`` shows it). The per-day figures divide
by devices x days; the steady state multiplies by the default retentions
(raw 7 days, minute rollups 30 days, hour rollups kept: that row grows).

    python -m benchmarks.b11_telemetry_storage [--devices 20] [--days 1] [--database-url postgresql://...]

Without ``--database-url`` a PostgreSQL cluster is started for the run (tests.support.postgres) and stopped after.
"""

from __future__ import annotations

import argparse
import random
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import text

from benchmarks.report import write_result
from fleet_protocol import sketch
from fleet_protocol.timestamps import to_iso
from fleet_server.config import ServerConfig
from fleet_server.retention import TelemetryRetention
from fleet_server.store import Database
from fleet_server.store import telemetry as telemetry_store

TABLES = ("telemetry", "telemetry_minute", "telemetry_hour")
RETAINED_DAYS = {"telemetry": 7, "telemetry_minute": 30}  # the defaults; hour rollups are kept
START = datetime(2026, 11, 1, tzinfo=timezone.utc)


def records_of(rng: random.Random, device: int, minute: int) -> list[dict]:
    """One minute of a device's telemetry: a heartbeat and one model version's statistics, as the agent writes."""
    ts = to_iso(START + timedelta(minutes=minute, seconds=device % 60))
    counts = [0] * sketch.KEYS
    for _ in range(rng.randint(40, 80)):  # requests in the minute, 0.3-3 ms each
        counts[sketch.key_of(int(rng.lognormvariate(13.8, 0.5)))] += 1
    local = sketch.Sketch()
    local.merge({k: c for k, c in enumerate(counts) if c})
    heartbeat = {"uptime_s": minute * 60, "malformed_messages": 0, "dropped_records": 0, "dropped_by_class": {},
                 "outbox_records": rng.randint(0, 5), "outbox_bytes": rng.randint(0, 4000), "modules": 1,
                 "cpu_percent": rng.randint(2, 60), "agent_cpu_percent": rng.randint(1, 20),
                 "rss_bytes": rng.randint(60, 90) * 2**20, "memory_percent": rng.randint(20, 70),
                 "disk_free_bytes": rng.randint(1, 30) * 2**30}
    stats = {"model": "sensor-anomaly", "version": 3, "accelerator": "cpu", "requests": local.total,
             "errors": rng.randint(0, 1), "latency_sketch": sketch.encode(counts),
             "latency_us": {f"p{round(q * 100)}": round((local.quantile(q) or 0) / 1000) for q in (0.5, 0.95, 0.99)}}
    return [{"seq": 2 * minute + 1, "ts": ts, "kind": "heartbeat", "data": heartbeat},
            {"seq": 2 * minute + 2, "ts": ts, "kind": "model_stats", "data": stats}]


def table_bytes(db: Database) -> dict[str, int]:
    """Bytes each table holds with its indexes, by the engine's own accounting."""
    with db.transaction() as conn:
        if db.dialect == "postgresql":
            return {t: conn.execute(text("SELECT pg_total_relation_size(:t)"), {"t": t}).scalar() for t in TABLES}
        owners = {name: table for name, table in conn.execute(
            text("SELECT name, tbl_name FROM sqlite_master WHERE type IN ('table', 'index')"))}
        sizes = dict.fromkeys(TABLES, 0)
        for name, size in conn.execute(text("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name")):
            if owners.get(name) in sizes:
                sizes[owners[name]] += size
        return sizes


def vacuum(db: Database) -> None:
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM"))


def measure(url: str, *, devices: int, days: int, seed: int = 11) -> dict:
    db = Database(url)
    rng = random.Random(seed)
    minutes = days * 1440
    try:
        for device in range(devices):
            for first in range(0, minutes, 30):
                records = [r for m in range(first, min(first + 30, minutes)) for r in records_of(rng, device, m)]
                telemetry_store.insert_records(db=db, device_id=f"device-{device:05d}", outbox_id="outbox-1",
                                               records=records, received=records[-1]["ts"])
        vacuum(db)
        raw = table_bytes(db)["telemetry"]
        with tempfile.TemporaryDirectory() as scratch:
            retention = TelemetryRetention(db=db, config=ServerConfig(data_dir=Path(scratch)),
                                           clock=lambda: START)  # prunes nothing: every row is younger than START
            rolled = retention.step()["rolled_up"]
        vacuum(db)
        sizes = {**table_bytes(db), "telemetry": raw}
        sizes["telemetry_after_rollup"] = table_bytes(db)["telemetry"]
    finally:
        db.close()
    per_day = {t: round(sizes[t] / devices / days) for t in TABLES}
    steady = sum(per_day[t] * RETAINED_DAYS[t] for t in RETAINED_DAYS)
    return {"engine": db.dialect, "devices": devices, "days": days, "raw_records": 2 * minutes * devices,
            "rolled_up": rolled, "bytes": sizes, "bytes_per_device_day": per_day,
            "steady_state_bytes_per_device": steady,
            "growth_after_30_days_bytes_per_device_day": per_day["telemetry_hour"]}


def _row(result: dict) -> str:
    d = result["bytes_per_device_day"]
    return (f"| B11-{result['engine']} | telemetry storage per device per day at a 60 s interval (heartbeat + one "
            f"model's stats a minute, {result['devices']} devices x {result['days']} day): raw; minute; hour rollups | "
            f"{d['telemetry']:,} B raw; {d['telemetry_minute']:,} B minute; {d['telemetry_hour']:,} B hour; steady "
            f"state (raw 7 d + minute 30 d) {result['steady_state_bytes_per_device'] / 1e6:.1f} MB per device, then "
            f"+{d['telemetry_hour']:,} B/day | raw kept forever: {d['telemetry'] * 365 / 1e6:.1f} MB per device-year | "
            f"— | bounded (issue 14) | yes |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--days", type=int, default=1)
    parser.add_argument("--database-url", help="PostgreSQL to measure on (default: start one for the run)")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        results["sqlite"] = measure(f"sqlite:///{scratch}/fleet.db", devices=args.devices, days=args.days)
    if args.database_url:
        results["postgresql"] = measure(args.database_url, devices=args.devices, days=args.days)
    else:
        from tests.support.postgres import start_postgres

        cluster = start_postgres()
        try:
            results["postgresql"] = measure(cluster.create_database(), devices=args.devices, days=args.days)
        finally:
            cluster.stop()
    write_result("B11", results)
    for result in results.values():
        print(_row(result))


if __name__ == "__main__":
    main()
