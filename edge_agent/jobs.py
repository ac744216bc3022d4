"""The agent's remote jobs: verify, run each job id at most once, send the result through the outbox.

A job payload on the device's ``jobs`` topic goes through, in order:

1. :func:`fleet_protocol.jobs.parse_job_envelope` (size and shape), then
   :meth:`fleet_protocol.trust.TrustedState.verify_job` (signature by a key the
   device trusts now, device binding, expiry). A refusal is counted like other
   refused messages (``RefusalCount`` kind ``jobs``, in the heartbeat's
   ``refused_messages`` event), logged at most every few seconds, and nothing runs.
2. :class:`JobStore` claims the job id in the agent's SQLite (``agent.db``,
   table ``jobs``, ``synchronous=FULL``) before it runs. A job id seen before
   never runs again: a finished one answers its stored result once more, one
   still queued or running here is ignored, and one a previous run of the agent
   had claimed without finishing (it died meanwhile) is answered ``failed``/
   ``job_interrupted`` rather than run a second time. A finished job whose
   result is in the outbox is forgotten :data:`KEEP_AFTER_EXPIRY_S` after its
   expiry (a redelivery is refused as expired by then), so the table stays small.
3. One worker thread runs the jobs in arrival order (:mod:`edge_agent.job_kinds`),
   stores the result (one over :data:`~fleet_protocol.jobs.MAX_RESULT_BYTES` becomes
   ``failed``/``result_too_large``), then adds it to the outbox (record kind ``job_result``)
   and makes the telemetry flush due at once; the outbox deletes it only after
   the broker's PUBACK. A result stored
   but not yet in the outbox when the agent stopped is added at the next start.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable

from fleet_protocol.canonical import canonical_json, canonical_text
from fleet_protocol.errors import BadDataError, EdgefleetError, MessageError
from fleet_protocol.jobs import MAX_RESULT_BYTES, RESULT_KIND, JobDocument, JobResult, parse_job_envelope
from fleet_protocol.timestamps import from_iso, to_iso
from fleet_protocol.trust import TrustedState

from .clock import utc_now
from .job_kinds import RUN, JobContext
from .mqtt_link import RateLimitedLog, RefusalCount
from .outbox import Outbox

log = logging.getLogger("edgefleet.agent.jobs")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    received TEXT NOT NULL,
    result TEXT,
    sent INTEGER NOT NULL DEFAULT 0,
    expires TEXT
);
"""
KEEP_AFTER_EXPIRY_S = 86_400  # a day of slack for the device's clock before a job id is forgotten


class JobStore:
    """Job ids seen by this device and their results, in ``agent.db`` beside the outbox (own connection)."""

    def __init__(self, path: Path):
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        if "expires" not in {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}:  # a first-release db
            self._db.execute("ALTER TABLE jobs ADD COLUMN expires TEXT")

    def claim(self, job: JobDocument) -> tuple[bool, dict | None]:
        """``(True, None)`` when ``job`` is new (now claimed), else ``(False, its stored result or None)``."""
        with self._lock:
            inserted = self._db.execute(
                "INSERT OR IGNORE INTO jobs(job_id, kind, received, expires) VALUES (?, ?, ?, ?)",
                (job.job_id, job.kind, to_iso(utc_now()), to_iso(from_iso(job.expires)))).rowcount
            if inserted:
                return True, None
            row = self._db.execute("SELECT result FROM jobs WHERE job_id = ?", (job.job_id,)).fetchone()
        return False, None if row[0] is None else json.loads(row[0])

    def finish(self, result: JobResult) -> None:
        with self._lock:
            self._db.execute("UPDATE jobs SET result = ?, sent = 0 WHERE job_id = ?",
                             (canonical_text(result.to_dict()), result.job_id))

    def mark_sent(self, job_id: str) -> None:
        with self._lock:
            self._db.execute("UPDATE jobs SET sent = 1 WHERE job_id = ?", (job_id,))

    def forget_expired(self, now: datetime) -> int:
        """Drop finished, sent jobs that expired over :data:`KEEP_AFTER_EXPIRY_S` before ``now``; how many."""
        with self._lock:
            return self._db.execute("DELETE FROM jobs WHERE result IS NOT NULL AND sent = 1 AND expires < ?",
                                    (to_iso(now - timedelta(seconds=KEEP_AFTER_EXPIRY_S)),)).rowcount

    def unfinished(self) -> list[tuple[str, str]]:
        """``(job_id, kind)`` of jobs claimed but never finished (the agent stopped while they waited or ran)."""
        with self._lock:
            return self._db.execute("SELECT job_id, kind FROM jobs WHERE result IS NULL ORDER BY rowid").fetchall()

    def unsent(self) -> list[dict]:
        with self._lock:
            rows = self._db.execute("SELECT result FROM jobs WHERE result IS NOT NULL AND sent = 0 "
                                    "ORDER BY rowid").fetchall()
        return [json.loads(row[0]) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class JobRunner:
    def __init__(self, *, trust: TrustedState, store: JobStore, outbox: Outbox, context: JobContext,
                 refusals: RefusalCount, on_malformed: Callable[[str], None],
                 on_result: Callable[[], None] | None = None, now=utc_now):
        self.trust = trust
        self.store = store
        self.outbox = outbox
        self.context = context
        self.refusals = refusals
        self._on_malformed = on_malformed
        self._on_result = on_result  # the telemetry's flush_soon: a result leaves now, not at the next tick
        self._now = now
        self._queue: queue.SimpleQueue[JobDocument | None] = queue.SimpleQueue()
        self._ratelog = RateLimitedLog(log)
        self._thread: threading.Thread | None = None
        self.executed = 0  # jobs this process ran (a redelivery or a replay does not count)

    def start(self) -> None:
        """Settle what a previous run left (interrupted jobs, results not yet in the outbox), then start the worker."""
        for job_id, kind in self.store.unfinished():
            now = to_iso(self._now())
            error = {"code": "job_interrupted", "category": "job",
                     "message": f"the agent stopped while job {job_id} waited or ran; it is not run again"}
            self.store.finish(JobResult(job_id, kind, "failed", {}, error, now, now))
        for result in self.store.unsent():
            self._send(result)
        self.store.forget_expired(self._now())
        self._thread = threading.Thread(target=self._loop, name="jobs", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=30)
            self._thread = None

    def receive(self, topic: str, payload: bytes) -> None:
        """A payload on the jobs topic (paho's thread): verify and claim it, queue it or answer it again."""
        if not payload:
            return
        try:
            envelope = parse_job_envelope(payload)
        except MessageError as exc:
            self._on_malformed(topic)
            self._ratelog.warning(topic, "malformed job (%d bytes) ignored: %s", len(payload), exc)
            return
        try:
            job = self.trust.verify_job(envelope, now=self._now())
        except BadDataError as exc:
            self.refusals.add("jobs", exc.code)
            self._ratelog.warning("refused", "refused job: %s", exc)
            return
        new, stored = self.store.claim(job)
        if new:
            self._queue.put(job)
        elif stored is not None:
            log.info("job %s was delivered again; answering its stored result, not running it", job.job_id)
            self._send(stored)

    def _loop(self) -> None:
        while (job := self._queue.get()) is not None:
            try:
                self._run(job)
            except Exception:  # noqa: BLE001 - one bad job must not stop the others
                log.exception("job %s (%s) could not be completed", job.job_id, job.kind)

    def _run(self, job: JobDocument) -> None:
        started = self._now()
        log.info("running job %s: %s %s", job.job_id, job.kind, job.params or "")
        self.executed += 1
        try:
            result, error = RUN[job.kind](job, self.context, started), None
        except EdgefleetError as exc:
            result, error = {}, exc.as_report()
        except Exception as exc:  # noqa: BLE001 - module code (a restart's init) can raise anything
            result, error = {}, {"code": "job_error", "category": "job", "message": f"{type(exc).__name__}: {exc}"}
        outcome = JobResult(job.job_id, job.kind, "failed" if error else "succeeded", result, error,
                            to_iso(started), to_iso(self._now()))
        if len(canonical_json(outcome.to_dict())) > MAX_RESULT_BYTES:  # the server would refuse it
            outcome = JobResult(job.job_id, job.kind, "failed", {}, {
                "code": "result_too_large", "category": "job",
                "message": f"the result is more than {MAX_RESULT_BYTES} bytes as JSON; ask for less"},
                outcome.started, outcome.finished)
        log.log(logging.WARNING if error else logging.INFO, "job %s %s%s", job.job_id, outcome.state,
                f": {error['message']}" if error else "")
        self.store.finish(outcome)
        self._send(outcome.to_dict())
        self.store.forget_expired(self._now())

    def _send(self, result: dict) -> None:
        self.outbox.add(RESULT_KIND, result)
        self.store.mark_sent(result["job_id"])
        if self._on_result is not None:
            self._on_result()
