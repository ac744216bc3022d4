"""The rig B3 and B8 share: simulated devices in a child process, and the server's rows read back.

:class:`DeviceProcess` runs :class:`DeviceSettings` ``devices`` paho clients on one
:class:`~simulators.mqtt_loop.MqttLoop` in a spawned child, driven through a pipe ("go",
"halt", "report", "stop"): in ``edgefleet`` mode each is the agent's own telemetry code (an
:class:`~edge_agent.outbox.Outbox` preloaded with ``records`` records, a
:class:`~edge_agent.telemetry.Telemetry` thread and an :class:`~edge_agent.mqtt_link.MqttLink`),
in ``bare`` mode a bare paho client publishing the same batches pre-encoded.
:func:`start_server` starts the real server on the broker, :class:`RowCounter` reads its
telemetry table, and :func:`loss_check` compares it with what the outboxes held and what the broker delivered.

The guarantee checked is at-least-once delivery, exactly-once storage. Counting rows alone cannot see a
duplicate (the table's primary key ``(device_id, outbox_id, seq)`` drops one before it is a row), so
:func:`loss_check` takes three counts that can disagree: the distinct ``(device, outbox, seq)`` the devices
issued, the records the broker delivered to the server and of those the ones it found already stored (its
``telemetry_records_received`` / ``telemetry_records_duplicate`` in ``GET /api/health``, read by
:func:`tests.support.redelivery.telemetry_counts`), and the rows stored. Zero loss: every issued record is a
row. Stored once: no row beyond the issued ones, and delivered minus duplicates delivered equals the rows stored.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt

from edge_agent.mqtt_link import MqttLink
from edge_agent.outbox import Outbox
from edge_agent.telemetry import Telemetry
from edgefleet_runtime.runtime import Runtime
from fleet_protocol import messages, topics
from firmware_profiles import load_profile
from fleet_server.config import ServerConfig
from fleet_server.runner import ServerThread
from simulators.mqtt_loop import MqttLoop

KIND = "model_stats"  # the preloaded records; heartbeats (kind ``heartbeat``) come on top
GUARANTEE = "at-least-once delivery, exactly-once storage"
BARE_TOPIC = "bench/bare/{}/telemetry"


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
    batch_records: int = messages.MAX_TELEMETRY_RECORDS  # "bare" mode: records per batch (an agent's minute: ~4)


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
        """Outbox id, highest seq ever given out (heartbeats included), records left, drops, batches sent, last
        connect."""
        with contextlib.closing(sqlite3.connect(f"file:{self.outbox.path}?mode=ro", uri=True)) as db:
            row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
        return {"outbox_id": self.outbox.outbox_id, "last_seq": row[0] if row else 0, "left": self.outbox.count(),
                "dropped": self.outbox.take_dropped(),
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
        size = s.batch_records
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

    def rows(self) -> int:
        """Rows stored, exactly (``COUNT(*)``, not the rowid shortcut of :meth:`stored`)."""
        return self._conn.execute("SELECT COUNT(*) FROM telemetry").fetchone()[0]

    def issued_stored(self, issued: dict[str, tuple[str, int]]) -> int:
        """Distinct issued records stored: ``(device, outbox, seq)`` with seq 1..top, ``issued[device] = (outbox,
        top)``."""
        if not issued:
            return 0
        values = ", ".join("(?, ?, ?)" for _ in issued)
        params = [value for device, (outbox, top) in issued.items() for value in (device, outbox, top)]
        return self._conn.execute(
            f"WITH issued (device_id, outbox_id, top) AS (VALUES {values}) SELECT COUNT(*) FROM (SELECT DISTINCT "
            "device_id, outbox_id, seq FROM telemetry JOIN issued USING (device_id, outbox_id) "
            "WHERE telemetry.seq BETWEEN 1 AND issued.top)", params).fetchone()[0]

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


def loss_check(counter: RowCounter, report: dict, deliveries: Callable[[], tuple[int, int]], *,
               settle_s: float = 5.0) -> dict:
    """Compare what the devices issued, what the broker delivered and what the server stored.

    ``report``: each device's ``outbox_id``, ``last_seq`` (it issued seqs 1..last_seq), ``left`` and ``dropped``.
    ``deliveries``: a callable returning the server's ``(delivered, duplicates delivered)``; it is read before
    and after the rows and the reading is retried for up to ``settle_s`` until they agree, so a batch landing
    between the reads is not taken for a fault. The verdicts: ``zero_loss`` (every issued record stored,
    none left in or dropped by an outbox) and ``stored_once`` (no row beyond the issued records, and
    delivered minus duplicates delivered equals the rows stored).
    """
    issued = {device: (r["outbox_id"], r["last_seq"]) for device, r in report.items()}
    deadline = time.monotonic() + settle_s
    while True:
        before = deliveries()
        rows, issued_stored = counter.rows(), counter.issued_stored(issued)
        after = deliveries()
        delivered, duplicates = after
        if before == after and delivered - duplicates == rows or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    checks = {"guarantee": GUARANTEE, "issued": sum(top for _, top in issued.values()), "delivered": delivered,
              "duplicates_delivered": duplicates, "rows_stored": rows,
              "left_in_outboxes": sum(r["left"] for r in report.values()),
              "dropped_by_outboxes": sum(r["dropped"] for r in report.values())}
    checks["missing"] = checks["issued"] - issued_stored
    checks["extra_stored"] = rows - issued_stored  # rows no issued record explains: a record stored twice
    checks["zero_loss"] = checks["missing"] == checks["left_in_outboxes"] == checks["dropped_by_outboxes"] == 0
    checks["stored_once"] = checks["extra_stored"] == 0 and delivered - duplicates == rows
    return checks


def start_server(workdir: Path, broker) -> ServerThread:
    return ServerThread(ServerConfig(data_dir=workdir, port=0, broker_url=broker.url)).start()
