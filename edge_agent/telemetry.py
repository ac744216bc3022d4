"""Telemetry: heartbeats, model statistics and events into the outbox, and the outbox to the broker.

One background thread does both halves:

- every ``heartbeat_interval_s`` it writes a ``heartbeat`` record (uptime,
  CPU %, RSS, system memory %, disk free, temperature when psutil has one,
  malformed-message and dropped-record counts) and one ``model_stats``
  record per model version that served requests since the last report
  (``requests``: answered without an error, ``errors``, ``latency_sketch``:
  the answered requests' latencies as a :mod:`fleet_protocol.sketch`
  (1 % relative error, mergeable across devices), ``latency_us``: its
  p50/p95/p99, and under an A/B split ``outputs``: answers by class, with
  ``answer_output`` naming the output counted, see :mod:`edgefleet_runtime.answers`),
  and one ``drift`` record per version that ships a drift reference and
  scored rows (:mod:`edgefleet_runtime.drift`);
- every ``telemetry_flush_interval_s``, and at once after a reconnect, it
  publishes up to 500 outbox records per :class:`TelemetryBatch` (QoS 1) in
  seq order, at most 8 batches in flight. A record leaves the outbox only
  when paho's ``on_publish`` reports the broker's PUBACK for the message that
  carried it; records in flight are not sent again (paho resends them itself
  after a reconnect). While a backlog remains (the last flush stopped at the
  in-flight limit), each PUBACK wakes the next flush at once rather than at
  the next tick, so a large outbox drains at the broker's pace.

Batches are assembled from the outbox's stored canonical text
(:func:`encode_batch`), byte for byte what
``messages.encode(TelemetryBatch(...).to_dict())`` gives, without decoding
and encoding every record again.

Values are integers (no floats: messages are canonical JSON). Events
(install started/succeeded/failed/refused, malformed messages) are written
by the rest of the agent through :meth:`Telemetry.event`.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from json.encoder import encode_basestring
from typing import Callable

import psutil

from edgefleet_runtime.drift import window_record
from edgefleet_runtime.runtime import LoadedModule, Runtime
from fleet_protocol import drift, messages, sketch, topics

from .mqtt_link import MqttLink, RateLimitedLog
from .outbox import Outbox, StoredRecord

log = logging.getLogger("edgefleet.agent.telemetry")

MAX_INFLIGHT_BATCHES = 8
MAX_BATCH_BYTES = messages.MAX_MESSAGE_BYTES // 2  # record data per batch, leaving room for the envelope
PENDING_EXPIRY_S = 60.0


class Telemetry:
    def __init__(self, *, outbox: Outbox, link: MqttLink, device_id: str, runtime: Runtime, disk_path: str,
                 heartbeat_interval_s: float, flush_interval_s: float, clock: Callable[[], float] = time.monotonic,
                 extra_records: Callable[[], list[tuple[str, dict]]] | None = None,
                 first_heartbeat_s: float | None = None, on_wake: Callable[[], None] | None = None):
        """``on_wake`` is called (on paho's thread: it must only schedule) when a PUBACK makes a flush due
        before its tick; the agent's own thread needs none (it waits on an event that is set too)."""
        self._step_log = RateLimitedLog(log)
        self.outbox = outbox
        self.link = link
        self.device_id = device_id
        self.runtime = runtime
        self.disk_path = disk_path
        self.heartbeat_interval_s = heartbeat_interval_s
        self.flush_interval_s = flush_interval_s
        self._clock = clock
        self._extra_records = extra_records  # e.g. fallback counts from the scoring API, at each heartbeat
        now = clock()
        self._next_beat = now + (min(heartbeat_interval_s, 1.0) if first_heartbeat_s is None else first_heartbeat_s)
        self._next_flush = now
        self._started_at = clock()
        self._topic = topics.device_topic(device_id, "telemetry")
        self._acks: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._pending: dict[int, tuple[list[int], float]] = {}  # mid -> (seqs, sent at)
        self._inflight: set[int] = set()
        self._sent_upto = 0  # every outbox record with a seq up to this one is in flight (or gone)
        self._backlog = False  # the last flush stopped at MAX_INFLIGHT_BATCHES
        self._on_wake = on_wake
        self._connected_at = 0.0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._process = psutil.Process(os.getpid())
        self._process.cpu_percent(None)  # the first call only primes the counter
        psutil.cpu_percent(None)
        self._malformed_lock = threading.Lock()
        self.malformed_total = 0
        self._malformed_new: dict[str, int] = {}
        self.batches_sent = 0
        self.records_sent = 0

    # --- producers ------------------------------------------------------------------------------

    def event(self, name: str, **data: object) -> None:
        record = {"event": name, **{k: v for k, v in data.items() if v is not None}}
        try:
            self.outbox.add("event", record)
        except Exception:  # noqa: BLE001 - telemetry must never break an install
            log.exception("cannot write event %s to the outbox", name)

    def malformed(self, topic: str) -> None:
        kind = topic.rsplit("/", 1)[-1]
        with self._malformed_lock:
            self.malformed_total += 1
            self._malformed_new[kind] = self._malformed_new.get(kind, 0) + 1

    def on_puback(self, mid: int) -> None:
        """paho's thread: only queue the id and, with a backlog, wake the next flush (paho holds its lock)."""
        self._acks.put(mid)
        if self._backlog:
            self._wake.set()
            if self._on_wake is not None:
                self._on_wake()

    def flush_soon(self) -> None:
        """Make the next flush due now (any thread): the ``flush_outbox`` job."""
        self._wake.set()
        if self._on_wake is not None:
            self._on_wake()

    def on_connect(self) -> None:
        self._connected_at = self._clock()
        self._wake.set()

    # --- the thread -----------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="telemetry", daemon=True)
        self._thread.start()

    def stop(self, *, flush_timeout_s: float = 2.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        deadline = self._clock() + flush_timeout_s
        try:
            self.heartbeat()
            self.flush()
            while self._pending and self._clock() < deadline and self.link.connected:
                time.sleep(0.05)
                self._apply_acks()
        except Exception:  # noqa: BLE001
            log.exception("final telemetry flush failed")

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.step())

    def step(self) -> float:
        """Heartbeat and/or flush when due; return the seconds until the next step is due.

        The agent's telemetry thread calls it in a loop; the simulator calls it from timers on its
        shared event loop.
        """
        now = self._clock()
        beat_due, flush_due = now >= self._next_beat, now >= self._next_flush or self._wake.is_set()
        if beat_due:  # scheduled before the work, so a failing step (a full disk) cannot spin
            self._next_beat = now + self.heartbeat_interval_s
        if flush_due:
            self._wake.clear()
            self._next_flush = now + self.flush_interval_s
        try:
            if beat_due:
                self.heartbeat()
            if flush_due:
                self.flush()
        except Exception as exc:  # noqa: BLE001 - keep stepping; the outbox keeps the records
            self._step_log.warning("step", "telemetry step failed (records stay in the outbox): %r", exc)
        if self._wake.is_set():  # a PUBACK or a reconnect while this step ran
            return 0.0
        return max(0.01, min(self._next_beat, self._next_flush) - self._clock())

    # --- heartbeat and model stats --------------------------------------------------------------

    def heartbeat(self) -> None:
        records: list[tuple[str, dict]] = [("heartbeat", self._heartbeat_data())]
        with self._malformed_lock:
            new, self._malformed_new = self._malformed_new, {}
        if new:
            records.append(("event", {"event": "malformed_messages", "count": sum(new.values()), "topics": new}))
        modules = list(self.runtime.table.values())
        modules += [v for m in modules for v in m.variants.values()]  # the other versions of A/B splits
        retired = []
        while self.runtime.retired:  # pop one at a time: the reconciler may append meanwhile
            retired.append(self.runtime.retired.pop(0))
        for module in retired + modules:
            stats = model_stats(module)
            if stats is not None:
                records.append(("model_stats", stats))
            window = window_record(module.drift)
            if window is not None:
                records.append((drift.KIND, window))
        if self._extra_records is not None:
            records.extend(self._extra_records())
        self.outbox.add_many(records)

    def _heartbeat_data(self) -> dict:
        dropped = self.outbox.take_dropped_by_class()
        data: dict = {"uptime_s": int(self._clock() - self._started_at), "malformed_messages": self.malformed_total,
                      "dropped_records": sum(dropped.values()), "dropped_by_class": dropped,
                      "outbox_records": self.outbox.count(), "outbox_bytes": self.outbox.size_bytes(),
                      "modules": len(self.runtime.table)}
        try:
            data["cpu_percent"] = round(psutil.cpu_percent(None))
            data["agent_cpu_percent"] = round(self._process.cpu_percent(None))
            data["rss_bytes"] = int(self._process.memory_info().rss)
            data["memory_percent"] = round(psutil.virtual_memory().percent)
            data["disk_free_bytes"] = int(psutil.disk_usage(self.disk_path).free)
        except (psutil.Error, OSError) as exc:
            log.debug("system metrics unavailable: %s", exc)
        temperature = _temperature()
        if temperature is not None:
            data["temperature_c"] = temperature
        return data

    # --- flushing -------------------------------------------------------------------------------

    def flush(self) -> int:
        """Publish what the outbox holds (when connected); return the number of records sent."""
        self._apply_acks()
        self._expire_pending()
        sent, full = 0, False
        while self.link.connected:
            if len(self._pending) >= MAX_INFLIGHT_BATCHES:
                full = True
                break
            records = self.outbox.pending_stored(messages.MAX_TELEMETRY_RECORDS, after=self._sent_upto,
                                                 exclude=self._inflight, max_bytes=MAX_BATCH_BYTES)
            if not records:
                break
            mid = self.link.publish(self._topic, encode_batch(self.device_id, self.outbox.outbox_id, records), qos=1)
            if mid is None:
                break
            seqs = [r.seq for r in records]
            self._pending[mid] = (seqs, self._clock())
            self._inflight.update(seqs)
            self._sent_upto = seqs[-1]  # the records skipped on the way were in flight already
            self.batches_sent += 1
            sent += len(records)
        self._backlog = full
        if full and not self._acks.empty():  # acknowledged while this flush ran: the next one is due now
            self._wake.set()
        self.records_sent += sent
        return sent

    def _apply_acks(self) -> None:
        done: list[int] = []
        while True:
            try:
                mid = self._acks.get_nowait()
            except queue.Empty:
                break
            entry = self._pending.pop(mid, None)
            if entry is not None:
                done.extend(entry[0])
                self._inflight.difference_update(entry[0])
        self.outbox.delete(done)

    def _expire_pending(self) -> None:
        """Safety net: a batch never acknowledged long after a reconnect is sent again (same seqs)."""
        now = self._clock()
        if not self.link.connected or now - self._connected_at < PENDING_EXPIRY_S:
            return
        for mid, (seqs, sent_at) in list(self._pending.items()):
            if now - sent_at > PENDING_EXPIRY_S:
                del self._pending[mid]
                self._inflight.difference_update(seqs)
                self._sent_upto = min(self._sent_upto, seqs[0] - 1)  # read them again at the next batch


def encode_batch(device_id: str, outbox_id: str, records: list[StoredRecord]) -> bytes:
    """The canonical JSON of a :class:`messages.TelemetryBatch` of ``records``, from their stored text.

    Keys in sorted order at both levels, as :func:`fleet_protocol.canonical.canonical_json` writes
    them; each record's data is already canonical (the outbox stores nothing else). Strings are
    quoted by ``json``'s own non-ASCII-preserving quoter, as ``json.dumps(..., ensure_ascii=False)``.
    """
    text = encode_basestring
    body = ",".join(f'{{"data":{r.data_json},"kind":{text(r.kind)},"seq":{r.seq},"ts":{text(r.ts)}}}'
                    for r in records)
    return (f'{{"device_id":{text(device_id)},"outbox_id":{text(outbox_id)},"records":[{body}],'
            f'"type":"telemetry-batch"}}').encode("utf-8")


def model_stats(module: LoadedModule) -> dict | None:
    bins, errors = module.stats.take()
    answer_output, outputs = module.answers.take()  # only A/B splits count answers by class
    requests = sum(n for _, n in bins)
    if not requests and not errors:
        return None
    latencies = sketch.encode_bins(bins)
    local = sketch.Sketch()
    local.merge(dict(bins))
    stats = {"model": module.name, "version": module.version, "accelerator": module.accelerator,
             "requests": requests, "errors": errors, "latency_sketch": latencies,
             "latency_us": {f"p{round(q * 100)}": round((local.quantile(q) or 0) / 1000) for q in (0.50, 0.95, 0.99)}}
    if outputs:
        stats["outputs"], stats["answer_output"] = outputs, answer_output
    return stats


def _temperature() -> int | None:
    reader = getattr(psutil, "sensors_temperatures", None)
    if reader is None:
        return None
    try:
        sensors = reader()
    except (OSError, RuntimeError, AttributeError):
        return None
    for entries in sensors.values():
        for entry in entries:
            if entry.current is not None:
                return round(entry.current)
    return None
