"""The agent's local SQLite database: durable telemetry outbox and a few persisted values.

``state_dir/agent.db`` in WAL mode with ``synchronous=FULL``: every committed
record (a heartbeat, an install event, the last accepted desired-state
generation) survives a power cut, which is the point of a store-and-forward
outbox. The cost (an fsync of the WAL per commit) is paid a few times a
second at most: telemetry is written in small batches (heartbeat interval,
install steps), never per inference request.

Tables:

- ``outbox(seq INTEGER PRIMARY KEY AUTOINCREMENT, kind, ts, data)``: records
  waiting for the broker's PUBACK; ``AUTOINCREMENT`` so a seq is never reused,
  even after the newest rows were deleted. Rows are deleted only once the
  broker acknowledged the batch that carried them (see
  :mod:`edge_agent.telemetry`).
- ``meta(key PRIMARY KEY, value)``: ``outbox_id`` (random, created once),
  ``last_generation`` (the trusted desired-state generation) and
  ``data_form`` (``canonical`` once every row's data is canonical JSON).

Record data is stored as canonical JSON text (:func:`fleet_protocol.canonical.canonical_text`:
sorted keys, no floats, UTF-8 unescaped), checked once when the record is added, so a
telemetry batch is assembled from the stored text without decoding and encoding it again
(:meth:`Outbox.pending_stored`). A database written before that rule is rewritten in the
canonical form when opened (a record with a float, which could never have been sent, is dropped).

Bounded by ``max_records`` rows and ``max_bytes`` of record data: past
either, records are dropped by priority, oldest first within a class:
captures (``capture``) go first, then telemetry (heartbeats, model stats,
fallback counts), and events (installs, refusals) and remote job results last. The drops are
counted per class and reported by :meth:`Outbox.take_dropped_by_class`
(the heartbeat carries them); :attr:`Outbox.dropped_total` keeps the counts
since the outbox was opened (the agent's metrics). Records leave in seq order, so each stream
(kind) is delivered in the order it was written.

One connection shared by the agent's threads behind one lock; nothing here
touches the network.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import logging
import threading
from pathlib import Path
from typing import NamedTuple

from fleet_protocol.canonical import canonical_text
from fleet_protocol.errors import MessageError
from fleet_protocol.jobs import RESULT_KIND
from fleet_protocol.messages import TelemetryRecord
from fleet_protocol.timestamps import to_iso

from .clock import utc_now

log = logging.getLogger("edgefleet.agent.outbox")

EVENT = "event"
CAPTURE = "capture"
JOB_RESULT = RESULT_KIND  # kept as long as events: an operator is waiting for it
DROP_ORDER = (("capture", "kind = ?", (CAPTURE,)), ("telemetry", "kind NOT IN (?, ?, ?)", (EVENT, JOB_RESULT, CAPTURE)),
              ("event", "kind IN (?, ?)", (EVENT, JOB_RESULT)))

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    ts TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class StoredRecord(NamedTuple):
    """A record as stored: its data still canonical JSON text."""

    seq: int
    ts: str
    kind: str
    data_json: str


class Outbox:
    """Durable, bounded, ordered telemetry records plus persisted key/values."""

    def __init__(self, path: Path, *, max_records: int = 100_000, max_bytes: int = 64 * 1024**2):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_records = max_records
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._dropped: dict[str, int] = {}  # since the last take_dropped_by_class
        self.dropped_total: dict[str, int] = {}  # since open, by class
        if self.get_meta("data_form") != "canonical":
            self._canonicalise()
        self._count, self._bytes = self._totals()
        outbox_id = self.get_meta("outbox_id")
        if outbox_id is None:
            outbox_id = "ob-" + secrets.token_hex(8)
            self.set_meta("outbox_id", outbox_id)
        self.outbox_id = outbox_id

    # --- key / values ---------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            self._db.execute("INSERT INTO meta(key, value) VALUES (?, ?) "
                             "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    def _canonicalise(self) -> None:
        """Rewrite rows from before the canonical-text rule (once per database)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for seq, kind, data in self._db.execute("SELECT seq, kind, data FROM outbox").fetchall():
                    try:
                        text = canonical_text(json.loads(data))
                    except (ValueError, MessageError):
                        log.warning("outbox record %d (%s) is not canonical JSON; dropped", seq, kind)
                        self._db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
                        self._count_dropped({EVENT: "event", JOB_RESULT: "event", CAPTURE: "capture"}.get(
                            kind, "telemetry"), 1)  # DROP_ORDER's names
                        continue
                    if text != data:
                        self._db.execute("UPDATE outbox SET data = ? WHERE seq = ?", (text, seq))
                self._db.execute("INSERT INTO meta(key, value) VALUES ('data_form', 'canonical') "
                                 "ON CONFLICT(key) DO UPDATE SET value = excluded.value")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    # --- records --------------------------------------------------------------------------------

    def add(self, kind: str, data: dict, *, ts: str | None = None) -> int:
        """Append one record; return its seq. ``data`` must be JSON without floats (:class:`MessageError`)."""
        return self.add_many([(kind, data)], ts=ts)[-1]

    def add_many(self, records: list[tuple[str, dict]], *, ts: str | None = None) -> list[int]:
        """Append records in one transaction; a float anywhere refuses them all (:class:`MessageError`)."""
        ts = ts or to_iso(utc_now())
        rows = [(kind, ts, canonical_text(data)) for kind, data in records]
        seqs: list[int] = []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for row in rows:
                    seqs.append(self._db.execute("INSERT INTO outbox(kind, ts, data) VALUES (?, ?, ?)", row).lastrowid)
                self._count += len(rows)
                self._bytes += sum(len(row[2]) for row in rows)
                if self._count > self.max_records or self._bytes > self.max_bytes:
                    self._trim()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                self._count, self._bytes = self._totals()
                raise
        return seqs

    def _totals(self) -> tuple[int, int]:
        count, size = self._db.execute("SELECT COUNT(*), COALESCE(SUM(length(data)), 0) FROM outbox").fetchone()
        return count, size

    def _over(self) -> bool:
        return self._count > self.max_records or self._bytes > self.max_bytes

    def _trim(self) -> None:
        """Drop the oldest records of the lowest priority class until both bounds hold (inside a transaction)."""
        for name, where, params in DROP_ORDER:
            while self._over():
                rows = self._db.execute(f"SELECT seq, length(data) FROM outbox WHERE {where} ORDER BY seq LIMIT 256",
                                        params).fetchall()
                if not rows:
                    break
                victims = []
                for seq, size in rows:
                    if not self._over():
                        break
                    victims.append(seq)
                    self._count -= 1
                    self._bytes -= size
                self._db.execute(f"DELETE FROM outbox WHERE seq IN ({','.join('?' * len(victims))})", victims)
                self._count_dropped(name, len(victims))

    def _count_dropped(self, name: str, n: int) -> None:
        self._dropped[name] = self._dropped.get(name, 0) + n
        self.dropped_total[name] = self.dropped_total.get(name, 0) + n

    def pending(self, limit: int, *, after: int = 0, exclude: set[int] | frozenset[int] = frozenset(),
                max_bytes: int | None = None) -> list[TelemetryRecord]:
        """:meth:`pending_stored` with each record's data decoded."""
        return [TelemetryRecord(r.seq, r.ts, r.kind, json.loads(r.data_json))
                for r in self.pending_stored(limit, after=after, exclude=exclude, max_bytes=max_bytes)]

    def pending_stored(self, limit: int, *, after: int = 0, exclude: set[int] | frozenset[int] = frozenset(),
                       max_bytes: int | None = None) -> list[StoredRecord]:
        """The oldest ``limit`` records past seq ``after`` in seq order, skipping the seqs in ``exclude`` (in flight).

        A sender that knows every record up to some seq is in flight passes it as ``after``, so the
        rows in flight are not read again at every batch. With ``max_bytes``, stop before the record
        that would take the data past it (the first record always comes, so one large record is never stuck).
        """
        out: list[StoredRecord] = []
        total = 0
        with self._lock:
            while len(out) < limit:
                rows = self._db.execute("SELECT seq, ts, kind, data FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                                        (after, limit - len(out))).fetchall()
                if not rows:
                    break
                for row in rows:
                    after = row[0]
                    if after not in exclude:
                        total += len(row[3])
                        if max_bytes is not None and out and total > max_bytes:
                            return out
                        out.append(StoredRecord(*row))
        return out

    def delete(self, seqs: list[int]) -> None:
        if not seqs:
            return
        with self._lock:
            for start in range(0, len(seqs), 500):
                part = seqs[start:start + 500]
                marks = ','.join('?' * len(part))
                freed = self._db.execute(f"SELECT COALESCE(SUM(length(data)), 0) FROM outbox WHERE seq IN ({marks})",
                                         part).fetchone()[0]
                self._count -= self._db.execute(f"DELETE FROM outbox WHERE seq IN ({marks})", part).rowcount
                self._bytes -= freed

    def count(self) -> int:
        return self._count

    def size_bytes(self) -> int:
        return self._bytes

    def take_dropped(self) -> int:
        """Records dropped by the bounds since the last call."""
        return sum(self.take_dropped_by_class().values())

    def take_dropped_by_class(self) -> dict[str, int]:
        """Records dropped by the bounds since the last call, per class (capture, telemetry, event)."""
        with self._lock:
            dropped, self._dropped = self._dropped, {}
        return dropped

    def close(self) -> None:
        with self._lock:
            self._db.close()
