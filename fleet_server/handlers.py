"""What the server does with each message devices send.

    .../status     upsert the device: online/offline (offline is the agent's last will), profile, tags
    .../reported   store the device's reported state
    .../telemetry  store the batch's records once each and the device's last_seen, in one
                   transaction (records of kind ``capture`` go to the captures table instead,
                   ``feedback`` to the feedback table: :mod:`fleet_server.feedback`, ``drift`` to the
                   drift windows: :mod:`fleet_server.drift.service`, ``job_result`` to the remote jobs:
                   :mod:`fleet_server.jobs`);
                   the age of its oldest record goes into the ingest lag histogram (once: not for
                   a redelivery that stores nothing new)
    .../fetch      publish the requested chunks of a bundle on its shared chunks topic, each
                   as few times as every requester needs (see :class:`ChunkSender`), encrypted
                   with the bundle's content key; only for a bundle in the requesting device's
                   current desired state (main version or A/B variant): any other request is
                   refused, counted as ``fetch_refused``, logged and answered with nothing

Every message that reaches a handler is counted by kind (:attr:`MessageHandlers.handled`, refused ones
too): with several replicas on shared subscriptions the counts of all replicas add up to the messages
devices sent, each handled by one replica.

The device id inside a payload must equal the one in the topic. A malformed
payload is counted and logged (at most one line per topic every few
seconds) and changes nothing; a handler never raises into the network
thread. Chunk publishing runs on its own thread, so a large fetch never
delays status or telemetry.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

from fleet_protocol import drift, messages, topics
from fleet_protocol import captures as capture_format
from fleet_protocol import feedback as feedback_format
from fleet_protocol.jobs import RESULT_KIND as JOB_RESULT
from fleet_protocol.errors import BadDataError, MessageError
from fleet_protocol.timestamps import from_iso, to_iso

from . import feedback
from .chunk_sender import ChunkSender
from .clock import utc_now
from .renewal import handle_renew
from .store import captures as capture_store
from .store import deployments as deployment_store
from .store import devices as device_store
from .store import telemetry as telemetry_store

log = logging.getLogger(__name__)


class MalformedCounter:
    """Counts refused messages by topic kind; logs at most once per topic per ``log_every_s``."""

    def __init__(self, *, log_every_s: float = 10.0, max_topics: int = 10_000):
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._last_log: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()
        self._log_every_s = log_every_s
        self._max_topics = max_topics

    def add(self, topic: str, kind: str, reason: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._counts[kind] += 1
            last = self._last_log.get(topic)
            if last is not None and now - last < self._log_every_s:
                self._suppressed[topic] += 1
                return
            if len(self._last_log) >= self._max_topics:
                self._last_log.clear()
            self._last_log[topic] = now
            suppressed = self._suppressed.pop(topic, 0)
        log.warning("refused a message on %s: %s%s", topic, reason,
                    f" ({suppressed} more since the last report)" if suppressed else "")

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    def by_kind(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


class MessageHandlers:
    def __init__(self, fleet):
        self._fleet = fleet
        self._db = fleet.db
        self.malformed = MalformedCounter()
        self._handled: Counter[str] = Counter()  # messages that reached a handler, by topic kind
        self._handled_lock = threading.Lock()
        self.telemetry_received = 0  # telemetry records (captures too) the broker delivered, duplicates included
        self.telemetry_duplicates = 0  # of those, records already stored (a redelivery), not stored again
        self.chunk_sender = ChunkSender(fleet, content_key=fleet.desired.content_keys.bundle_key)
        self._by_kind = {"status": self._status, "reported": self._reported, "telemetry": self._telemetry,
                         "fetch": self._fetch,
                         "renew": lambda device_id, payload, retained: handle_renew(fleet, device_id, payload)}

    def handle(self, topic: str, payload: bytes, retained: bool = False) -> None:
        """Entry point for every message; never raises."""
        try:
            device_id, kind = topics.parse_device_topic(topic)
        except MessageError as exc:
            self.malformed.add(topic, "topic", str(exc))
            return
        handler = self._by_kind.get(kind)
        if handler is None:
            return  # e.g. a desired state of ours, echoed by a broker
        with self._handled_lock:
            self._handled[kind] += 1
        try:
            handler(device_id, payload, retained)
        except BadDataError as exc:
            self.malformed.add(topic, kind, str(exc))
        except Exception:  # noqa: BLE001 - a bug here must not stop message handling
            log.exception("handling a %s message from %s", kind, device_id)

    def handled(self) -> dict[str, int]:
        """Device messages this server handled since it started, by topic kind (refused ones included)."""
        with self._handled_lock:
            return dict(self._handled)

    def stop(self) -> None:
        self.chunk_sender.stop()

    def _status(self, device_id: str, payload: bytes, retained: bool) -> None:
        status = messages.parse_device_status(payload)
        _same_device(device_id, status.device_id)
        now = to_iso(utc_now())
        seen = None if status.state == "offline" else (_parsed_ts(status.ts) if retained else now)
        changed = device_store.record_status(
            db=self._db, device_id=device_id, status=status.state, seen=seen, profile=status.profile,
            agent_version=status.agent_version, scoring_url=status.scoring_url, device_tags=status.tags, created=now)
        if changed:
            self._fleet.desired.recompute([device_id])

    def _reported(self, device_id: str, payload: bytes, retained: bool) -> None:
        reported = messages.parse_reported_state(payload)
        _same_device(device_id, reported.device_id)
        now = to_iso(utc_now())
        new = device_store.record_reported(db=self._db, device_id=device_id, reported=reported.to_dict(),
                                           seen=None if retained else now, profile=reported.profile,
                                           agent_version=reported.agent_version, created=now)
        if new:
            self._fleet.desired.recompute([device_id])

    def _telemetry(self, device_id: str, payload: bytes, retained: bool) -> None:
        batch = messages.parse_telemetry_batch(payload)
        _same_device(device_id, batch.device_id)
        moment = utc_now()
        now = to_iso(moment)
        apart = (capture_format.KIND, feedback_format.KIND, drift.KIND, JOB_RESULT)
        records = [r.to_dict() for r in batch.records if r.kind not in apart]
        captures = [r.to_dict() for r in batch.records if r.kind == capture_format.KIND and self._valid_capture(
            device_id, r.data)]
        labels = feedback.valid_records([r.to_dict() for r in batch.records if r.kind == feedback_format.KIND],
                                        lambda reason: self.malformed.add(topics.device_topic(device_id, "telemetry"),
                                                                          "feedback", reason))
        windows = [r.to_dict() for r in batch.records if r.kind == drift.KIND]
        refused: list[str] = []  # drift windows are checked against their reference inside the transaction

        def refuse_window(reason: str) -> None:
            refused.append(reason)
            self.malformed.add(topics.device_topic(device_id, "telemetry"), "drift", reason)

        with self._db.transaction():  # one commit per batch: the records, the captures and last_seen together
            new = telemetry_store.insert_records(db=self._db, device_id=device_id, outbox_id=batch.outbox_id,
                                                 records=records, received=now)
            if captures:
                new += capture_store.insert_captures(db=self._db, device_id=device_id, outbox_id=batch.outbox_id,
                                                     records=captures, received=now)
            new += self._fleet.feedback.ingest(device_id=device_id, records=labels, received=now)
            if windows:
                new += self._fleet.drift.ingest(device_id=device_id, outbox_id=batch.outbox_id, records=windows,
                                                received=now, refuse=refuse_window)
            if not retained:
                device_store.touch(db=self._db, device_id=device_id, seen=now)
        kept = len(records) + len(captures) + len(labels) + len(windows) - len(refused)
        self.telemetry_received += kept  # at-least-once: a redelivery counts again
        self.telemetry_duplicates += kept - new  # ... and is not stored again
        if new and not retained:  # a redelivery that stored nothing new was observed when it was stored
            self._fleet.metrics.observe_ingest(batch.records[0].ts, moment)
        for record in batch.records:
            if record.kind == JOB_RESULT:
                try:  # the job's own state dedups: a repeated answer is only counted, a redelivered record not
                    self._fleet.jobs.record_result(device_id, record.data, outbox_id=batch.outbox_id, seq=record.seq)
                except BadDataError as exc:
                    self.malformed.add(topics.device_topic(device_id, "telemetry"), "job_result", str(exc))

    def _valid_capture(self, device_id: str, data: dict) -> bool:
        """A capture record that does not decode is counted and dropped; the rest of its batch is kept."""
        try:
            capture_format.decode_capture(data)
        except BadDataError as exc:
            self.malformed.add(topics.device_topic(device_id, "telemetry"), "capture", str(exc))
            return False
        return True

    def _fetch(self, device_id: str, payload: bytes, retained: bool) -> None:
        if retained:
            return  # a fetch request is a one-off; a retained copy is stale by definition
        request = messages.parse_fetch_request(payload)
        _same_device(device_id, request.device_id)
        if request.bundle_digest not in self._fleet.desired.bundles_of(device_id):
            self.malformed.add(topics.device_topic(device_id, "fetch"), "fetch_refused",
                               f"device {device_id} asked for bundle {request.bundle_digest[:12]}, which is not in "
                               "its desired state")
            return
        chunks = self._fleet.chunk_index.chunks_of(request.bundle_digest)
        if chunks is None:
            raise MessageError(f"fetch request for unknown bundle {request.bundle_digest[:12]}")
        foreign = [c for c in request.chunks if c not in chunks]
        wanted = [c for c in request.chunks if c in chunks]
        deployment_store.record_transfer(db=self._db, bundle_digest=request.bundle_digest, device_id=device_id,
                                         chunks={c: chunks[c] for c in wanted})
        self.chunk_sender.request(request.bundle_digest, device_id, wanted)
        if foreign:
            raise MessageError(f"fetch request asks for {len(foreign)} chunk(s) that are not part of bundle "
                               f"{request.bundle_digest[:12]} (first {foreign[0][:12]})")


def _same_device(topic_id: str, payload_id: str) -> None:
    if topic_id != payload_id:
        raise MessageError(f"payload is from device {payload_id!r} but the topic names {topic_id!r}")


def _parsed_ts(ts: str | None) -> str | None:
    if ts is None:
        return None
    try:
        return to_iso(from_iso(ts))
    except MessageError:
        return None
