"""B3: telemetry ingest, devices → Mosquitto → fleet server → SQLite, vs bare paho through the same broker.

edgefleet side: each simulated device is the agent's own telemetry code, an
:class:`~edge_agent.outbox.Outbox` preloaded with ``records`` records and a
:class:`~edge_agent.telemetry.Telemetry` flushing it through an
:class:`~edge_agent.mqtt_link.MqttLink`; a real server
(:class:`~fleet_server.runner.ServerThread` on the same external Mosquitto)
stores the batches. The clock runs from the moment the devices start
flushing until the last preloaded record is a row of the server's SQLite.
A device keeps at most 8 batches of 500 records in flight; each PUBACK
wakes its next flush while a backlog remains, so the flush tick (5 s) does
not pace the drain.

Reference side: bare paho clients publish the very same payloads (the same
500-record batches, byte for byte, QoS 1) and one bare paho subscriber takes
them: once only counting them, once also inserting each batch into a table
shaped like the server's with one ``executemany`` per message (the
reference the ratio uses: the edgefleet side ends in SQLite too). A fourth
run sends the bare publishers' batches to the real server, which measures
the server's ingest alone (``server_only``).

The devices of every side are paho clients on one
:class:`~simulators.mqtt_loop.MqttLoop` in a child process, and the server
or subscriber runs in this one, so the devices never take the GIL from the
receiving end; the CPU seconds of devices, receiver and broker are recorded
for each run (on a small machine the agent devices' own work competes with
the server for the cores; bare devices have nothing to do). Every run checks
zero loss: every record stored (or received) exactly once.

    python -m benchmarks.b3_telemetry [--devices 20] [--records 2000] [--rounds 3]

Each side runs ``rounds`` times, interleaved with the others; the result is
each side's median records/s with its range (lowest and highest round), and
the ratios are ratios of medians: one lucky round cannot flatter either side.

The devices, the server and the row counting are :mod:`benchmarks.telemetry_rig`, shared with B8.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sqlite3
import statistics
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import psutil

from benchmarks.report import update_readme_rows, write_result
from benchmarks.telemetry_rig import (BARE_TOPIC, KIND, DeviceProcess, DeviceSettings, RowCounter, loss_check,
                                      start_server)
from fleet_protocol import messages
from tests.support.mosquitto import start_mosquitto
from tests.support.redelivery import telemetry_counts

TELEMETRY_DDL = """
CREATE TABLE IF NOT EXISTS telemetry (device_id TEXT NOT NULL, outbox_id TEXT NOT NULL, seq INTEGER NOT NULL,
    ts TEXT NOT NULL, kind TEXT NOT NULL, data TEXT NOT NULL, received TEXT NOT NULL,
    PRIMARY KEY (device_id, outbox_id, seq));
CREATE INDEX IF NOT EXISTS telemetry_received ON telemetry (received);
CREATE INDEX IF NOT EXISTS telemetry_device_kind ON telemetry (device_id, kind, received);
"""


# --- the receiving side ----------------------------------------------------------------------------


class CpuMeter:
    """CPU seconds (user + system) the devices, the receiving process and the broker spend from now on."""

    def __init__(self, devices_pid: int, broker_pid: int):
        self._processes = {"devices": psutil.Process(devices_pid), "receiver": psutil.Process(),
                           "broker": psutil.Process(broker_pid)}
        self._start = self._now()

    def _now(self) -> dict[str, float]:
        return {name: sum(p.cpu_times()[:2]) for name, p in self._processes.items()}

    def read(self) -> dict[str, float]:
        return {name: round(value - self._start[name], 3) for name, value in self._now().items()}


class BareSubscriber:
    """One bare paho subscriber; counts messages and optionally inserts them the simplest way."""

    COUNTS = ("messages delivered and distinct payloads (a redelivery is the same payload), and with SQLite the rows "
              "stored; not duplicates per record, and its INSERT OR IGNORE on the same primary key as the server's "
              "cannot store one twice, so only loss (rows < records sent) can show")

    def __init__(self, host: str, port: int, expected: int, store: Path | None):
        self.expected, self.received, self.done = expected, 0, threading.Event()
        self.digests: set[int] = set()
        self.finished_at = 0.0
        self._db = None
        if store is not None:
            self._db = sqlite3.connect(store, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(TELEMETRY_DDL)
        subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bare-subscriber", clean_session=True,
                                  protocol=mqtt.MQTTv311)
        self.client.on_connect = lambda c, *a: c.subscribe(BARE_TOPIC.format("+"), qos=1)
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = self._message
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        if not subscribed.wait(30):
            raise RuntimeError("the bare subscriber got no SUBACK")

    def _message(self, client, userdata, message) -> None:
        if self._db is not None:
            doc = json.loads(message.payload)
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            rows = [(doc["device_id"], doc["outbox_id"], r["seq"], r["ts"], r["kind"], json.dumps(r["data"]), now)
                    for r in doc["records"]]
            with self._db:
                self._db.executemany("INSERT OR IGNORE INTO telemetry VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        self.digests.add(hash(message.payload))
        self.received += 1
        if self.received == self.expected:
            self.finished_at = time.monotonic()
            self.done.set()

    def rows(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM telemetry").fetchone()[0] if self._db else 0

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        if self._db is not None:
            self._db.close()


# --- one measurement of each side ------------------------------------------------------------------


def measure_bare(broker, workdir: Path, devices: int, records: int, *, store: bool) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    s = DeviceSettings("bare", broker.host, broker.port, str(workdir), devices, records)
    total = devices * records
    proc = DeviceProcess(s)
    sub = BareSubscriber(broker.host, broker.port, proc.info["messages"], workdir / "bare.db" if store else None)
    try:
        cpu = CpuMeter(proc.pid, broker.process.pid)
        started = proc.command("go", "started")
        if not sub.done.wait(600):
            raise RuntimeError(f"bare subscriber got {sub.received} of {sub.expected} messages")
        seconds = sub.finished_at - started
        cpu_s = cpu.read()
        report = proc.command("report", "report")
        rows = sub.rows()
    finally:
        proc.close()
        sub.close()
    return {"seconds": seconds, "records_per_s": total / seconds, "messages": sub.expected,
            "messages_per_s": sub.expected / seconds, "payload_bytes": proc.info["bytes"],
            "delivered_messages": sub.received, "duplicate_messages_delivered": sub.received - len(sub.digests),
            "distinct_messages": len(sub.digests), "acked": sum(r["acked"] for r in report.values()), "cpu_s": cpu_s,
            "rows_stored": rows if store else None, "counts": BareSubscriber.COUNTS,
            "zero_loss": len(sub.digests) == sub.expected and (not store or rows == total)}


def measure_edgefleet(broker, workdir: Path, devices: int, records: int, *, agents: bool = True) -> dict:
    """Agent devices (or, with ``agents=False``, bare publishers of the same payloads) → the server's SQLite."""
    s = DeviceSettings("edgefleet" if agents else "bare", broker.host, broker.port, str(workdir / "devices"),
                       devices, records, bare_to_server=not agents)
    total = devices * records
    server = start_server(workdir / "server", broker)
    counter = RowCounter(workdir / "server" / "fleet.db")
    proc = DeviceProcess(s)
    try:
        cpu = CpuMeter(proc.pid, broker.process.pid)
        started = proc.command("go", "started")
        finished = counter.wait_for(total, kind=KIND, timeout_s=600)
        seconds = finished - started
        cpu_s = cpu.read()
        proc.command("halt", "halted")
        report = proc.command("report", "report")
        if not agents:
            report = {d: {"outbox_id": f"ob-{d}", "last_seq": records, "left": 0, "dropped": 0,
                          "batches_sent": r["messages"]}
                      for d, r in report.items()}
        try:  # the final heartbeats; what never arrives shows up as missing below
            counter.wait_for(sum(r["last_seq"] for r in report.values()), timeout_s=60)
        except RuntimeError:
            pass
        checks = loss_check(counter, report, functools.partial(telemetry_counts, server.url))
    finally:
        proc.close()
        counter.close()
        server.stop()
    batches = devices * -(-records // messages.MAX_TELEMETRY_RECORDS)  # the preloaded ones, as on the bare side
    return {"seconds": seconds, "records_per_s": total / seconds, "messages": batches,
            "messages_per_s": batches / seconds, "batches_sent_in_all": sum(r["batches_sent"] for r in report.values()),
            "cpu_s": cpu_s,
            **checks, "zero_loss": checks["zero_loss"] and checks["stored_once"]}


def run(devices: int = 20, records: int = 2000, rounds: int = 3, *, workdir: Path | None = None,
        publish: bool = True) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = workdir or Path(tmp)
        broker = start_mosquitto(root / "broker")
        sides: dict[str, list[dict]] = {"edgefleet": [], "server_only": [], "bare": [], "bare_sqlite": []}
        load = [os.getloadavg()[0]]
        try:
            for n in range(rounds):
                sides["bare"].append(measure_bare(broker, root / f"bare-{n}", devices, records, store=False))
                sides["bare_sqlite"].append(measure_bare(broker, root / f"bares-{n}", devices, records, store=True))
                sides["edgefleet"].append(measure_edgefleet(broker, root / f"edge-{n}", devices, records))
                sides["server_only"].append(measure_edgefleet(broker, root / f"srv-{n}", devices, records,
                                                              agents=False))
                load.append(os.getloadavg()[0])
        finally:
            broker.stop()
    medians = {name: statistics.median(r["records_per_s"] for r in runs) for name, runs in sides.items()}
    result = {"devices": devices, "records_per_device": records, "rounds": rounds,
              "load_average_1m": load, "runs": sides, "median_records_per_s": medians,
              "spread_records_per_s": {name: spread([r["records_per_s"] for r in runs])
                                       for name, runs in sides.items()},
              "ratio_vs_bare_sqlite": medians["edgefleet"] / medians["bare_sqlite"],
              "ratio_vs_bare_transport": medians["edgefleet"] / medians["bare"],
              "server_only_ratio_vs_bare_sqlite": medians["server_only"] / medians["bare_sqlite"],
              "zero_loss": all(r["zero_loss"] for runs in sides.values() for r in runs),
              "zero_loss_by_side": {name: all(r["zero_loss"] for r in runs) for name, runs in sides.items()},
              "flush_interval_s": DeviceSettings.flush_interval_s, "batch_records": messages.MAX_TELEMETRY_RECORDS,
              "target_ratio": 0.8}
    if publish:
        write_result("B3", result)
        update_readme_rows(_rows(result))
    return result


def spread(values: list[float]) -> dict[str, float]:
    """Lowest and highest of the rounds, and their distance as a share of the median."""
    middle = statistics.median(values)
    return {"min": min(values), "max": max(values), "relative": (max(values) - min(values)) / middle if middle else 0.0}


def _rows(result: dict) -> dict[str, str]:
    n, k, rounds = result["devices"], result["records_per_device"], result["rounds"]
    medians, spreads = result["median_records_per_s"], result["spread_records_per_s"]
    lossless = result["zero_loss_by_side"]

    def rate(side: str) -> str:
        low, high = spreads[side]["min"], spreads[side]["max"]
        return f"{medians[side]:,.0f}/s ({low:,.0f}–{high:,.0f})"

    reference = (f"{rate('bare_sqlite')} bare paho pub → sub + `executemany` "
                 f"({medians['bare']:,.0f}/s without SQLite)")

    def row(bench_id: str, what: str, side: str, ratio: float) -> str:
        met = ratio >= 0.8 and lossless[side]
        return (f"| {bench_id} | {what}, {n} devices × {k} records, records/s, median of {rounds} rounds (range; "
                f"zero loss: {'yes' if lossless[side] else 'NO'}) | {rate(side)} | {reference} | "
                f"{ratio:.2f}x | ≥ 0.8x | {'yes' if met else 'no'} |")

    return {"B3": row("B3", "telemetry ingest, agent outboxes → Mosquitto → server → SQLite", "edgefleet",
                      result["ratio_vs_bare_sqlite"]),
            "B3-server": row("B3-server", "telemetry ingest of the server alone (bare publishers of the same batches)",
                             "server_only", result["server_only_ratio_vs_bare_sqlite"])}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--records", type=int, default=2000, help="records preloaded per device")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each side, interleaved; the median counts")
    args = parser.parse_args()
    out = run(args.devices, args.records, args.rounds)
    for name, median in out["median_records_per_s"].items():
        low, high = out["spread_records_per_s"][name]["min"], out["spread_records_per_s"][name]["max"]
        print(f"{name}: median {median:,.0f} records/s (range {low:,.0f}–{high:,.0f}), zero loss "
              f"{out['zero_loss_by_side'][name]}")
    print(f"ratio of medians vs bare+SQLite {out['ratio_vs_bare_sqlite']:.2f}x (server alone "
          f"{out['server_only_ratio_vs_bare_sqlite']:.2f}x), vs bare transport {out['ratio_vs_bare_transport']:.2f}x; "
          f"load average {out['load_average_1m']}")
