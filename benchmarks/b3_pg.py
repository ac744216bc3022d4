"""B3 on PostgreSQL: telemetry ingest with one, two and three server replicas vs one server on SQLite.

Every configuration runs in the same benchmark, on one Mosquitto, rounds
interleaved (sqlite-1, pg-1, pg-2, pg-3, then again): each server is a real
``edgefleet server run`` process; the PostgreSQL replicas share one database
(a fresh one per round, in a cluster this benchmark starts with
PostgreSQL's durable defaults: fsync, synchronous commit, full-page writes)
and take the devices' telemetry through shared subscriptions
(``--shared-subscriptions``: each batch goes to one replica). The devices
are B3's bare publishers of the agent's 500-record batches aimed at the
server's telemetry topics (B3's ``server_only`` side): the agents' own work
would take the cores the replicas compete for. The clock runs from "go"
until the last record is a row; each run checks zero loss and exactly-once
storage as B3 does (summing the replicas' delivery counters).

It also measures what a record costs: CPU seconds (user + system, psutil)
of the server processes and of PostgreSQL (the postmaster and its backends,
less the backend of the benchmark's own row counting) per 1,000 records,
and the WAL bytes per record (``pg_current_wal_lsn`` before and after). From
those :func:`projection` writes what N replicas on N machines would ingest
and where PostgreSQL bounds it. Not here: failover, the agents' side (B3).

    python -m benchmarks.b3_pg [--devices 20] [--records 1000] [--rounds 3] [--replicas 1 2 3]
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import tempfile
from pathlib import Path

import psutil

from benchmarks.b3_telemetry import spread
from benchmarks.report import update_readme_rows, write_result
from benchmarks.telemetry_rig import KIND, DeviceProcess, DeviceSettings, RowCounter, loss_check
from fleet_protocol import messages
from tests.support.fleet import spawn_server, wait_healthy
from tests.support.mosquitto import start_mosquitto
from tests.support.postgres import Postgres, start_postgres
from tests.support.redelivery import telemetry_counts


class PgRowCounter:
    """:class:`~benchmarks.telemetry_rig.RowCounter`'s questions asked of the replicas' PostgreSQL database."""

    def __init__(self, cluster: Postgres, dbname: str):
        self._conn = cluster.connect(dbname)
        self.backend_pid = self._conn.execute("SELECT pg_backend_pid()").fetchone()[0]

    def _one(self, sql: str, params=()) -> int:
        return self._conn.execute(sql, params).fetchone()[0]

    def stored(self) -> int:
        return self._one("SELECT COUNT(*) FROM telemetry")

    rows = stored

    def count(self, kind: str) -> int:
        return self._one("SELECT COUNT(*) FROM telemetry WHERE kind = %s", (kind,))

    def issued_stored(self, issued: dict[str, tuple[str, int]]) -> int:
        """Distinct issued records stored (as RowCounter.issued_stored)."""
        values = ", ".join("(%s, %s, %s)" for _ in issued)
        params = [value for device, (outbox, top) in issued.items() for value in (device, outbox, top)]
        return self._one(f"WITH issued (device_id, outbox_id, top) AS (VALUES {values}) SELECT COUNT(*) FROM "
                         "(SELECT DISTINCT device_id, outbox_id, seq FROM telemetry JOIN issued USING (device_id, "
                         "outbox_id) WHERE telemetry.seq BETWEEN 1 AND issued.top) AS stored", params)

    wait_for = RowCounter.wait_for

    def wal_lsn(self) -> str:
        return self._one("SELECT pg_current_wal_lsn()::text")

    def wal_bytes_since(self, lsn: str) -> int:
        return int(self._one("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)", (lsn,)))

    def close(self) -> None:
        self._conn.close()


class CpuMeter:
    """CPU seconds (user + system) of named groups of processes from now on. A group is a callable returning its
    processes at the moment of reading (PostgreSQL's backends are its postmaster's children)."""

    def __init__(self, groups: dict):
        self._groups = groups
        self._start = self._now()

    def _now(self) -> dict[str, dict[int, float]]:
        seen = {}
        for name, processes in self._groups.items():
            seen[name] = {}
            for p in processes():
                try:
                    seen[name][p.pid] = sum(p.cpu_times()[:2])
                except psutil.NoSuchProcess:  # a backend that ended: its time is lost, hence pooled connections
                    pass
        return seen

    def read(self) -> dict[str, float]:
        now = self._now()
        return {name: round(sum(t - self._start[name].get(pid, 0.0) for pid, t in now[name].items()), 3)
                for name in self._groups}


def postgres_processes(cluster: Postgres, exclude: int):
    root = psutil.Process(cluster.process.pid)
    return [root] + [p for p in root.children(recursive=True) if p.pid != exclude]


def measure(config: str, replicas: int, broker, cluster: Postgres | None, workdir: Path, devices: int,
            records: int, batch_records: int) -> dict:
    """One run of ``replicas`` servers on SQLite (``cluster`` None) or on a fresh PostgreSQL database."""
    workdir.mkdir(parents=True)
    args: tuple[str, ...] = ()
    if cluster is not None:
        url = cluster.create_database(migrated=True)
        args = ("--database-url", url, "--shared-subscriptions")
    servers = [spawn_server(workdir, broker.url, *args, *(("--server-id", f"r{i}") if cluster else ()),
                            data_dir=workdir / f"server-{i}", name=f"server-{i}") for i in range(replicas)]
    counter = None
    try:
        for server in servers:
            wait_healthy(server)
        if cluster is None:
            counter = RowCounter(workdir / "server-0" / "fleet.db")
        else:
            counter = PgRowCounter(cluster, url.split("?")[0].rsplit("/", 1)[1])
        s = DeviceSettings("bare", broker.host, broker.port, str(workdir / "devices"), devices, records,
                           bare_to_server=True, batch_records=batch_records)
        total = devices * records
        proc = DeviceProcess(s)
        try:
            groups = {"servers": lambda: [psutil.Process(x.popen.pid) for x in servers],
                      "devices": lambda: [psutil.Process(proc.pid)],
                      "broker": lambda: [psutil.Process(broker.process.pid)]}
            if cluster is not None:
                groups["postgres"] = functools.partial(postgres_processes, cluster, counter.backend_pid)
                lsn = counter.wal_lsn()
            cpu = CpuMeter(groups)
            started = proc.command("go", "started")
            seconds = counter.wait_for(total, kind=KIND, timeout_s=600) - started
            cpu_s = cpu.read()
            wal = counter.wal_bytes_since(lsn) if cluster is not None else None
            report = {d: {"outbox_id": f"ob-{d}", "last_seq": records, "left": 0, "dropped": 0}
                      for d in proc.command("report", "report")}
        finally:
            proc.close()

        def deliveries() -> tuple[int, int]:
            counts = [telemetry_counts(x.url) for x in servers]
            return sum(c[0] for c in counts), sum(c[1] for c in counts)

        checks = loss_check(counter, report, deliveries)
        by_replica = [telemetry_counts(x.url)[0] for x in servers]
    finally:
        if counter is not None:
            counter.close()
        for server in servers:
            server.stop()
    per_1000 = {name: value * 1000 / total for name, value in cpu_s.items()}
    batches = devices * -(-records // batch_records)
    return {"config": config, "replicas": replicas, "seconds": seconds, "records_per_s": total / seconds,
            "messages": batches, "messages_per_s": batches / seconds, "delivered_by_replica": by_replica,
            "cpu_s": cpu_s, "cpu_s_per_1000_records": per_1000,
            "cpu_s_per_1000_messages": {name: value * 1000 / batches for name, value in cpu_s.items()},
            "wal_bytes": wal,
            "wal_bytes_per_record": wal / total if wal is not None else None,
            **checks, "zero_loss": checks["zero_loss"] and checks["stored_once"]}


def projection(per_1000: dict[str, float], wal_per_record: float, *, postgres_cores: int = 8) -> dict:
    """What N replicas on N machines would ingest, from the measured CPU seconds per 1,000 records.

    A replica is one Python process whose ingest runs on one thread: at most one core, so a replica ingests
    ``1000 / server_cpu`` records/s on a machine of its own. PostgreSQL is bound by its CPU per record
    (``1000 / postgres_cpu`` records/s per core, ``postgres_cores`` of them) and, on its disk, by WAL bytes per
    record. The figures hold for the batch size they were measured at (the per-message cost is in them).
    """
    per_replica = 1000 / per_1000["servers"]
    per_pg_core = 1000 / per_1000["postgres"]
    return {"records_per_s_per_replica": per_replica, "records_per_s_per_postgres_core": per_pg_core,
            "records_per_s_by_replicas": {n: min(n * per_replica, postgres_cores * per_pg_core) for n in (1, 2, 4, 8, 16)},
            "replicas_one_postgres_core_carries": per_pg_core / per_replica,
            "wal_bytes_per_record": wal_per_record,
            "wal_mb_per_s_at_100k_records_per_s": wal_per_record * 100_000 / 1e6,
            "assumes": f"each replica on its own core; PostgreSQL with {postgres_cores} cores; no network or disk bound"}


def run(devices: int = 20, records: int = 1000, rounds: int = 3, replicas: tuple[int, ...] = (1, 2, 3), *,
        batch_records: int = messages.MAX_TELEMETRY_RECORDS, publish: bool = True) -> dict:
    configs = [("sqlite-1", 1)] + [(f"pg-{n}", n) for n in replicas]
    runs: dict[str, list[dict]] = {name: [] for name, _ in configs}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cluster = start_postgres(durable=True)
        load = [os.getloadavg()[0]]
        try:
            for n in range(rounds):
                for name, count in configs:
                    # a fresh broker each time: the servers' persistent sessions (one share group) would otherwise
                    # queue this run's batches for the next run's servers
                    broker = start_mosquitto(root / f"broker-{name}-{n}")
                    try:
                        runs[name].append(measure(name, count, broker, None if name.startswith("sqlite") else
                                                  cluster, root / f"{name}-{n}", devices, records, batch_records))
                    finally:
                        broker.stop()
                    load.append(os.getloadavg()[0])
                    print(f"round {n + 1} {name}: {runs[name][-1]['records_per_s']:,.0f} records/s, zero loss "
                          f"{runs[name][-1]['zero_loss']}, load {load[-1]:.1f}", flush=True)
        finally:
            cluster.stop()
    medians = {name: statistics.median(r["records_per_s"] for r in rs) for name, rs in runs.items()}
    cost = {name: {group: statistics.median(r["cpu_s_per_1000_records"][group] for r in rs)
                   for group in rs[0]["cpu_s_per_1000_records"]} for name, rs in runs.items()}
    wal = {name: statistics.median(r["wal_bytes_per_record"] for r in rs)
           for name, rs in runs.items() if rs[0]["wal_bytes_per_record"] is not None}
    result = {"devices": devices, "records_per_device": records, "rounds": rounds, "publishers": "bare (B3 server_only)",
              "postgres_settings": "fsync on, synchronous_commit on, full_page_writes on, shared_buffers 128MB",
              "load_average_1m": load, "runs": runs, "median_records_per_s": medians,
              "spread_records_per_s": {name: spread([r["records_per_s"] for r in rs]) for name, rs in runs.items()},
              "median_cpu_s_per_1000_records": cost, "median_wal_bytes_per_record": wal,
              "zero_loss_by_config": {name: all(r["zero_loss"] for r in rs) for name, rs in runs.items()},
              "batch_records": batch_records, "median_messages_per_s": {
                  name: statistics.median(r["messages_per_s"] for r in rs) for name, rs in runs.items()},
              "median_cpu_s_per_1000_messages": {name: {group: statistics.median(
                  r["cpu_s_per_1000_messages"][group] for r in rs) for group in rs[0]["cpu_s_per_1000_messages"]}
                  for name, rs in runs.items()},
              "projection": projection(cost[f"pg-{replicas[0]}"], wal[f"pg-{replicas[0]}"])}
    result["zero_loss"] = all(result["zero_loss_by_config"].values())
    if publish:
        write_result("B3-pg" if batch_records == messages.MAX_TELEMETRY_RECORDS else f"B3-pg-batch{batch_records}",
                     result)
        update_readme_rows(_rows(result))
    return result


def _rows(result: dict) -> dict[str, str]:
    n, k, rounds = result["devices"], result["records_per_device"], result["rounds"]
    medians, spreads, cost = result["median_records_per_s"], result["spread_records_per_s"], \
        result["median_cpu_s_per_1000_records"]
    reference = medians["sqlite-1"]
    batch = result["batch_records"]
    suffix = "" if batch == messages.MAX_TELEMETRY_RECORDS else f"-batch{batch}"
    rows = {}
    for name, median in medians.items():
        if name == "sqlite-1":
            continue
        replicas = name.split("-")[1]
        low, high = spreads[name]["min"], spreads[name]["max"]
        lossless = result["zero_loss_by_config"][name]
        rows[f"B3-{name}{suffix}"] = (
            f"| B3-{name}{suffix} | telemetry ingest of {replicas} server replica(s) on PostgreSQL (shared "
            f"subscriptions, one Mosquitto; bare publishers, {batch} records a message), {n} devices × {k} records, records/s, median of {rounds} interleaved "
            f"rounds (range; zero loss: {'yes' if lossless else 'NO'}); CPU s per 1,000 records: servers "
            f"{cost[name]['servers']:.3f}, PostgreSQL {cost[name]['postgres']:.3f}; WAL "
            f"{result['median_wal_bytes_per_record'][name]:,.0f} B/record | {median:,.0f}/s ({low:,.0f}–{high:,.0f}) "
            f"| {reference:,.0f}/s one server on SQLite, same run (servers {cost['sqlite-1']['servers']:.3f} CPU s "
            f"per 1,000) | {median / reference:.2f}x | none (2 cores shared by every replica) | — |")
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--records", type=int, default=1000, help="records preloaded per device")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each configuration, interleaved")
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 3], help="PostgreSQL replica counts")
    parser.add_argument("--batch-records", type=int, default=messages.MAX_TELEMETRY_RECORDS,
                        help="records per MQTT message (500: B3's backlog batches; 4: an agent's minute at a 30 s "
                             "heartbeat and one model)")
    parser.add_argument("--no-publish", action="store_true", help="print only; write no JSON and no README rows")
    args = parser.parse_args()
    out = run(args.devices, args.records, args.rounds, tuple(args.replicas),
              batch_records=args.batch_records, publish=not args.no_publish)
    for name, median in out["median_records_per_s"].items():
        print(f"{name}: median {median:,.0f} records/s, CPU s per 1,000 records "
              f"{out['median_cpu_s_per_1000_records'][name]}, zero loss {out['zero_loss_by_config'][name]}")
    print(f"WAL bytes per record {out['median_wal_bytes_per_record']}; projection {out['projection']}")
