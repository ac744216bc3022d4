"""B3: telemetry ingest, devices → Mosquitto → fleet server → SQLite, vs bare paho through the same broker.

edgefleet side: each simulated device is the agent's own telemetry code, an
:class:`~edge_agent.outbox.Outbox` preloaded with ``records`` records and a
:class:`~edge_agent.telemetry.Telemetry` flushing it through an
:class:`~edge_agent.mqtt_link.MqttLink`; a real server
(:class:`~fleet_server.runner.ServerThread` on the same external Mosquitto)
stores the batches. The clock runs from the moment the devices start
flushing until the last preloaded record is a row of the server's SQLite.
A device sends at most 8 batches of 500 records per flush tick (5 s), so
``records`` stays at or under 4,000 to measure ingest, not the tick.

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

:class:`DeviceProcess`, :class:`RowCounter` and :func:`loss_check` are reused by B8.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import multiprocessing
import os
import sqlite3
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import psutil

from benchmarks.report import update_readme_rows, write_result
from edge_agent.mqtt_link import MqttLink
from edge_agent.outbox import Outbox
from edge_agent.runtime import Runtime
from edge_agent.telemetry import Telemetry
from fleet_protocol import messages, topics
from fleet_protocol.profiles import load_profile
from fleet_server.config import ServerConfig
from fleet_server.runner import ServerThread
from simulators.mqtt_loop import MqttLoop
from tests.support.mosquitto import start_mosquitto

KIND = "model_stats"  # the preloaded records; heartbeats (kind ``heartbeat``) come on top
BARE_TOPIC = "bench/bare/{}/telemetry"
TELEMETRY_DDL = """
CREATE TABLE IF NOT EXISTS telemetry (device_id TEXT NOT NULL, outbox_id TEXT NOT NULL, seq INTEGER NOT NULL,
    ts TEXT NOT NULL, kind TEXT NOT NULL, data TEXT NOT NULL, received TEXT NOT NULL,
    PRIMARY KEY (device_id, outbox_id, seq));
CREATE INDEX IF NOT EXISTS telemetry_received ON telemetry (received);
CREATE INDEX IF NOT EXISTS telemetry_device_kind ON telemetry (device_id, kind, received);
"""


def record_data(i: int) -> dict:
    """A model-statistics record of the agent's shape (about 200 bytes of JSON)."""
    return {"model": "bench-model", "version": 3, "accelerator": "cpu", "requests": 100 + i % 900, "errors": i % 7,
            "latency_us": {"buckets": [[64, 10 + i % 50], [128, 40], [256, 25], [512, 3]], "p50": 128, "p95": 256}}


# --- the device side (a child process) --------------------------------------------------------------


@dataclass(frozen=True)
class DeviceSettings:
    mode: str  # "edgefleet" (agent outbox + telemetry + link) or "bare" (paho clients, pre-encoded payloads)
    host: str
    port: int
    workdir: str
    devices: int
    records: int  # preloaded per device
    prefix: str = "dev"
    rate_per_s: float = 0.0  # records each device adds per second after "go" (B8)
    flush_interval_s: float = 5.0  # the agent's default telemetry_flush_interval_s
    heartbeat_interval_s: float = 30.0  # the agent's default
    bare_to_server: bool = False  # "bare" mode: publish on the devices' telemetry topics, not on BARE_TOPIC


class AgentDevice:
    """One simulated device made of the agent's parts: Outbox, Telemetry, MqttLink."""

    def __init__(self, device_id: str, state_dir: Path, s: DeviceSettings, runtime: Runtime, loop: MqttLoop):
        self.device_id = device_id
        self.outbox = Outbox(state_dir / "agent.db")
        self.link = MqttLink(client_id=f"edgefleet-agent-{device_id}", host=s.host, port=s.port, loop=loop,
                             on_connect=self._on_connect, on_puback=lambda mid: self.telemetry.on_puback(mid))
        self.telemetry = Telemetry(outbox=self.outbox, link=self.link, device_id=device_id, runtime=runtime,
                                   disk_path=str(state_dir), heartbeat_interval_s=s.heartbeat_interval_s,
                                   flush_interval_s=s.flush_interval_s)
        self.next_record = 0
        self.last_connect = 0.0  # time.monotonic() of the latest (re)connect

    def _on_connect(self) -> None:
        self.last_connect = time.monotonic()
        self.telemetry.on_connect()

    def add(self, count: int) -> None:
        records = [(KIND, record_data(self.next_record + i)) for i in range(count)]
        self.next_record += count
        self.outbox.add_many(records)

    def report(self) -> dict:
        """Highest seq ever given out (heartbeats included), records left, drops, batches sent, last connect."""
        with contextlib.closing(sqlite3.connect(f"file:{self.outbox.path}?mode=ro", uri=True)) as db:
            row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
        return {"last_seq": row[0] if row else 0, "left": self.outbox.count(), "dropped": self.outbox.take_dropped(),
                "batches_sent": self.telemetry.batches_sent, "last_connect": self.last_connect}

    def start(self) -> None:
        """Start the agent's telemetry thread: it flushes at once, then every flush interval."""
        self.telemetry.start()

    def halt(self) -> None:
        """The agent's own stop: a last heartbeat, a last flush, and the wait for its PUBACKs."""
        self.telemetry.stop(flush_timeout_s=10)

    def close(self) -> None:
        self.link.stop()
        self.outbox.close()


class BareDevice:
    """A bare paho client with the same batches pre-encoded."""

    def __init__(self, device_id: str, s: DeviceSettings, loop: MqttLoop):
        self.device_id = device_id
        self.topic = topics.device_topic(device_id, "telemetry") if s.bare_to_server else BARE_TOPIC.format(device_id)
        ts = "2026-11-23T00:00:00Z"
        records = [messages.TelemetryRecord(i + 1, ts, KIND, record_data(i)) for i in range(s.records)]
        size = messages.MAX_TELEMETRY_RECORDS
        self.payloads = [messages.encode(messages.TelemetryBatch(device_id, f"ob-{device_id}", tuple(
            records[start:start + size])).to_dict()) for start in range(0, len(records), size)]
        self.acked = 0
        self.connected = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bare-{device_id}",
                                  clean_session=True, protocol=mqtt.MQTTv311)
        self.client.max_inflight_messages_set(64)  # as the agent's link
        self.client.on_connect = lambda *a: self.connected.set()
        self.client.on_publish = self._acked
        self._loop = loop
        loop.connect(self.client, s.host, s.port, keepalive=30)

    def _acked(self, *args) -> None:
        self.acked += 1

    def start(self) -> None:
        """Hand every payload to paho at once (QoS 1, at most 64 in flight, as the agent's link)."""
        for payload in self.payloads:
            self.client.publish(self.topic, payload, qos=1)

    def report(self) -> dict:
        return {"acked": self.acked, "messages": len(self.payloads)}

    def halt(self) -> None:
        """Nothing to flush: every payload went to paho at :meth:`start`."""

    def close(self) -> None:
        self.client.disconnect()
        self._loop.detach(self.client).wait(5)


def _device_main(conn, s: DeviceSettings) -> None:
    """The child: build the devices, then obey "go", "halt", "report" and "stop" from the parent."""
    logging.getLogger("edgefleet").setLevel(logging.ERROR)  # 20 links each saying "disconnected" at every stop
    ids = [f"{s.prefix}-{i:05d}" for i in range(s.devices)]
    loop = MqttLoop("bench-devices")
    loop.start()
    if s.mode == "bare":
        devices = [BareDevice(d, s, loop) for d in ids]
        for device in devices:
            device.connected.wait(30)
        conn.send(("ready", {"messages": sum(len(d.payloads) for d in devices),
                             "bytes": sum(len(p) for d in devices for p in d.payloads)}))
    else:
        runtime = Runtime(load_profile("generic-cpu"))
        devices = [AgentDevice(d, Path(s.workdir) / d, s, runtime, loop) for d in ids]
        for device in devices:
            device.add(s.records)
            device.link.start()
        for device in devices:
            device.link.wait_connected(30)
        conn.send(("ready", {"connected": sum(d.link.connected for d in devices)}))
    generating, generator = threading.Event(), None
    while True:
        command = conn.recv()
        if command == "go":
            started = time.monotonic()
            for device in devices:
                device.start()
            if s.rate_per_s > 0:
                generating.set()
                generator = threading.Thread(target=_generate, args=(devices, s.rate_per_s, generating), daemon=True)
                generator.start()
            conn.send(("started", started))
        elif command == "halt":
            generating.clear()
            if generator is not None:
                generator.join()
            for device in devices:
                device.halt()
            conn.send(("halted", None))
        elif command == "report":
            conn.send(("report", {d.device_id: d.report() for d in devices}))
        elif command == "stop":
            for device in devices:
                device.close()
            loop.stop()
            conn.send(("stopped", None))
            return


def _generate(devices: list[AgentDevice], rate_per_s: float, on: threading.Event) -> None:
    """Add records at ``rate_per_s`` per device, in one transaction per device per second."""
    start, tick = time.monotonic(), 0
    while on.is_set():
        tick += 1
        due = int(rate_per_s * tick) - int(rate_per_s * (tick - 1))
        for device in devices:
            device.add(due)
        time.sleep(max(0.0, start + tick - time.monotonic()))


class DeviceProcess:
    """The devices in a child process, driven through a pipe."""

    def __init__(self, settings: DeviceSettings):
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=_device_main, args=(child, settings), daemon=True)
        self._process.start()
        self.pid = self._process.pid
        self.info = self._expect("ready", timeout_s=120)

    def _expect(self, what: str, timeout_s: float = 60):
        if not self._conn.poll(timeout_s):
            raise RuntimeError(f"the device process did not answer {what!r} in {timeout_s}s")
        tag, value = self._conn.recv()
        if tag != what:
            raise RuntimeError(f"the device process answered {tag!r}, expected {what!r}")
        return value

    def command(self, command: str, answer: str, timeout_s: float = 60):
        self._conn.send(command)
        return self._expect(answer, timeout_s)

    def close(self) -> None:
        if self._process.is_alive():
            try:
                self.command("stop", "stopped", timeout_s=30)
            except (RuntimeError, OSError, EOFError):
                pass
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()


# --- the receiving side ----------------------------------------------------------------------------


class RowCounter:
    """Read-only view of the server's telemetry table (its own connection, in the server's process)."""

    def __init__(self, db_path: Path):
        self._conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)

    def stored(self) -> int:
        """Rows ever inserted, in O(log n): telemetry rows are never deleted, so the highest rowid is the count."""
        return self._conn.execute("SELECT COALESCE(MAX(rowid), 0) FROM telemetry").fetchone()[0]

    def count(self, kind: str) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM telemetry WHERE kind = ?", (kind,)).fetchone()[0]

    def stored_upto(self, last_seq: dict[str, int]) -> int:
        """Rows of each device whose seq is at most ``last_seq[device]`` (what its outbox held at some moment)."""
        values = ", ".join("(?, ?)" for _ in last_seq)
        params = [value for item in last_seq.items() for value in item]
        return self._conn.execute(f"WITH upto (device_id, top) AS (VALUES {values}) SELECT COUNT(*) FROM telemetry "
                                  "JOIN upto USING (device_id) WHERE telemetry.seq <= upto.top", params).fetchone()[0]

    def per_device(self) -> dict[str, tuple[int, int, int]]:
        """device -> (rows, distinct seqs, highest seq)."""
        rows = self._conn.execute("SELECT device_id, COUNT(*), COUNT(DISTINCT outbox_id || ':' || seq), MAX(seq) "
                                  "FROM telemetry GROUP BY device_id")
        return {device: (count, distinct, top) for device, count, distinct, top in rows}

    def wait_for(self, target: int, *, kind: str | None = None, timeout_s: float, poll_s: float = 0.01) -> float:
        """Poll until ``target`` rows (of ``kind``) are stored; return the monotonic time it was seen.

        The poll is the cheap :meth:`stored`, so that polling takes little from the server's
        thread; the exact count by kind is taken only once that many rows exist.
        """
        deadline = time.monotonic() + timeout_s
        while self.stored() < target or (kind is not None and self.count(kind) < target):
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {self.stored()} of {target} rows stored after {timeout_s}s")
            time.sleep(poll_s)
        return time.monotonic()

    def close(self) -> None:
        self._conn.close()


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


def loss_check(counter: RowCounter, report: dict) -> dict:
    """Every record each outbox ever held is a row, exactly once, and every outbox is empty."""
    stored = counter.per_device()
    missing = sum(r["last_seq"] - stored.get(d, (0, 0, 0))[1] for d, r in report.items())
    duplicates = sum(rows - distinct for rows, distinct, _ in stored.values())
    return {"records_written": sum(r["last_seq"] for r in report.values()), "rows_stored": sum(
        v[0] for v in stored.values()), "missing": missing, "duplicates": duplicates,
        "left_in_outboxes": sum(r["left"] for r in report.values()),
        "dropped_by_outboxes": sum(r["dropped"] for r in report.values())}


class BareSubscriber:
    """One bare paho subscriber; counts messages and optionally inserts them the simplest way."""

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
            "distinct_messages": len(sub.digests), "acked": sum(r["acked"] for r in report.values()), "cpu_s": cpu_s,
            "rows_stored": rows if store else None,
            "zero_loss": len(sub.digests) == sub.expected and (not store or rows == total)}


def start_server(workdir: Path, broker) -> ServerThread:
    return ServerThread(ServerConfig(data_dir=workdir, port=0, broker_url=broker.url)).start()


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
            report = {d: {"last_seq": records, "left": 0, "dropped": 0, "batches_sent": r["messages"]}
                      for d, r in report.items()}
        try:  # the final heartbeats; what never arrives shows up as missing below
            counter.wait_for(sum(r["last_seq"] for r in report.values()), timeout_s=60)
        except RuntimeError:
            pass
        checks = loss_check(counter, report)
    finally:
        proc.close()
        counter.close()
        server.stop()
    batches = devices * -(-records // messages.MAX_TELEMETRY_RECORDS)  # the preloaded ones, as on the bare side
    return {"seconds": seconds, "records_per_s": total / seconds, "messages": batches,
            "messages_per_s": batches / seconds, "batches_sent_in_all": sum(r["batches_sent"] for r in report.values()),
            "cpu_s": cpu_s,
            **checks,
            "zero_loss": checks["missing"] == 0 and checks["duplicates"] == 0 and checks["dropped_by_outboxes"] == 0}


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
    best = {name: max(runs, key=lambda r: r["records_per_s"]) for name, runs in sides.items()}
    result = {"devices": devices, "records_per_device": records, "rounds": rounds,
              "load_average_1m": load, "runs": sides, "best": best,
              "median_records_per_s": {k: statistics.median(r["records_per_s"] for r in v) for k, v in sides.items()},
              "ratio_vs_bare_sqlite": best["edgefleet"]["records_per_s"] / best["bare_sqlite"]["records_per_s"],
              "ratio_vs_bare_transport": best["edgefleet"]["records_per_s"] / best["bare"]["records_per_s"],
              "server_only_ratio_vs_bare_sqlite": best["server_only"]["records_per_s"]
              / best["bare_sqlite"]["records_per_s"],
              "zero_loss": all(r["zero_loss"] for runs in sides.values() for r in runs),
              "flush_interval_s": DeviceSettings.flush_interval_s, "batch_records": messages.MAX_TELEMETRY_RECORDS,
              "target_ratio": 0.8}
    if publish:
        write_result("B3", result)
        update_readme_rows(_rows(result))
    return result


def _rows(result: dict) -> dict[str, str]:
    best, n, k = result["best"], result["devices"], result["records_per_device"]
    e, s, b, q = best["edgefleet"], best["server_only"], best["bare"], best["bare_sqlite"]
    reference = (f"{q['records_per_s']:,.0f}/s bare paho pub → sub + `executemany` "
                 f"({b['records_per_s']:,.0f}/s without SQLite)")

    def row(bench_id: str, what: str, side: dict, ratio: float) -> str:
        met = ratio >= 0.8 and side["zero_loss"]
        return (f"| {bench_id} | {what}, {n} devices × {k} records, records/s (zero loss: "
                f"{'yes' if side['zero_loss'] else 'NO'}) | {side['records_per_s']:,.0f}/s | {reference} | "
                f"{ratio:.2f}x | ≥ 0.8x | {'yes' if met else 'no'} |")

    return {"B3": row("B3", "telemetry ingest, agent outboxes → Mosquitto → server → SQLite", e,
                      result["ratio_vs_bare_sqlite"]),
            "B3-server": row("B3-server", "telemetry ingest of the server alone (bare publishers of the same batches)",
                             s, result["server_only_ratio_vs_bare_sqlite"])}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--records", type=int, default=2000, help="records preloaded per device")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each side, interleaved; the best counts")
    args = parser.parse_args()
    out = run(args.devices, args.records, args.rounds)
    for name, r in out["best"].items():
        print(f"{name}: {r['records_per_s']:,.0f} records/s, {r['messages_per_s']:,.1f} messages/s, "
              f"{r['seconds']:.2f} s, zero loss {r['zero_loss']}")
    print(f"ratio vs bare+SQLite {out['ratio_vs_bare_sqlite']:.2f}x (server alone "
          f"{out['server_only_ratio_vs_bare_sqlite']:.2f}x), vs bare transport {out['ratio_vs_bare_transport']:.2f}x; "
          f"load average {out['load_average_1m']}")
