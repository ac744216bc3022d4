"""Remote jobs: create one for a set of devices, deliver it in stages, collect each device's result.

:meth:`JobController.create` checks the kind and params
(:func:`fleet_protocol.jobs.check_params`), resolves the target as deployments
do (devices, tag selector or group, :meth:`.deployments.Deployments.resolve_target`: the
devices matching *now*, in id order) and stores one queued row per device.
The controller (one background thread, plus a step after every change) then,
for each running job:

1. marks devices that did not answer before their job expired ``timed_out``
   (in an aborted or cancelled job too: what was sent before the stop is
   never left ``sent`` for ever), but only once the broker link has been up
   for ``answer_settle_s`` (``ServerConfig.job_answer_settle_s``, 30 s): while
   the server is away the broker (the embedded one: each device's outbox)
   keeps the devices' answers, and they arrive only after it reconnects, so a
   job that expired meanwhile is not judged (nor aborted) before they had their chance;
2. when ``abort_after_failures`` devices failed or timed out, cancels every
   device still queued and ends the job ``aborted`` with the reason (IoT Jobs'
   abort rule; what was sent already still reports);
3. sends the next queued devices, as many as ``rate_per_minute`` allows (one
   at once, then one more every 60/rate seconds; all at once without a rate).
   The schedule lives in this process: after a server restart, or once the
   broker link failed a send, it starts again from the last device sent, so
   the devices that would have gone during the pause never leave in one burst
   (a burst would outrun the abort threshold). Each gets its own :class:`~fleet_protocol.jobs.JobDocument`
   signed with the server's current signing key, published on its ``jobs``
   topic at QoS 1 (not retained: the device's persistent session holds it while
   it is offline), then marked sent with the envelope;
4. ends the job ``completed`` once no device is queued or waiting for an answer.

Results arrive as ``job_result`` telemetry records (:meth:`record_result`): the
first answer of a device sets its outcome, a repeated one (a redelivered job
answered from the device's store) is only counted, and a telemetry record
delivered again (the same ``outbox_id`` and ``seq``) is not counted again. An operator may cancel a
running job (queued devices are cancelled). Creation goes through the API (and
its audit log); an abort by the controller is written to the audit log too.
Everything is in the database and each step reads it afresh, so a restarted server continues; among
replicas only the leader steps jobs (:mod:`.leadership`), and a new leader starts the rate schedules again.
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
from datetime import datetime, timedelta
from typing import NamedTuple

from fleet_protocol import topics
from fleet_protocol.canonical import canonical_json
from fleet_protocol.errors import BadDataError
from fleet_protocol.jobs import JobDocument, check_params, parse_result
from fleet_protocol.signing import sign_envelope
from fleet_protocol.timestamps import from_iso, to_iso

from . import audit
from .clock import utc_now
from .errors import ConflictError, NotFoundError
from .leadership import NotLeader
from .store import jobs as job_store
from .tick_loop import TickLoop

log = logging.getLogger(__name__)

STATES = ("running", "completed", "aborted", "cancelled")
DEFAULT_TTL_S = 3600
ANSWERED = ("succeeded", "failed")
CONTROLLER = "job-controller"


def due(rate_per_minute: float | None, elapsed_s: float, sent: int, queued: int) -> int:
    """How many more devices may be sent a job now: one at the start, one more every ``60/rate`` seconds."""
    if rate_per_minute is None:
        return queued
    allowed = 1 + math.floor(rate_per_minute * max(0.0, elapsed_s) / 60)
    return max(0, min(queued, allowed - sent))


class _Schedule(NamedTuple):
    """Where a job's rate schedule starts: ``since``, when ``sent`` devices had been sent already."""

    since: datetime
    sent: int


class JobController:
    def __init__(self, fleet, *, tick_s: float = 1.0, answer_settle_s: float = 30.0):
        self._fleet = fleet
        self._db = fleet.db
        self._answer_settle_s = answer_settle_s
        self._leadership = fleet.leadership
        self._lock = threading.RLock()
        self._loop = TickLoop(self.step_all, tick_s=tick_s, name="edgefleet-jobs", log=log,
                              failure="advancing jobs failed", gate=lambda: self._leadership.is_leader)
        self._schedules: dict[int, _Schedule] = {}  # per running job; missing: start again (see the docstring)

    def start(self) -> None:
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()

    # --- operations ---------------------------------------------------------------------------

    def create(self, *, kind: str, params: dict, devices: list[str] | None, selector: dict[str, str] | None,
               group: str | None, rate_per_minute: float | None, abort_after_failures: int | None,
               ttl_s: int = DEFAULT_TTL_S, created_by: str | None = None) -> dict:
        params = check_params(kind, params, where="job")
        target, targeted = self._fleet.deployments.resolve_target(devices=devices, selector=selector, group=group,
                                                                  what="a job")
        if not targeted:
            raise BadDataError("no device matches the job's target, so it would run nowhere; check the tags with "
                               "`edgefleet device list`")
        plan = {"rate_per_minute": rate_per_minute, "abort_after_failures": abort_after_failures, "ttl_s": ttl_s}
        with self._lock:
            job_id = job_store.insert_job(
                db=self._db, wire_id=f"job-{secrets.token_hex(6)}", kind=kind, params=params,
                target={**target, "group": group}, plan=plan, devices=sorted(d["id"] for d in targeted),
                created_by=created_by, created=to_iso(utc_now()))
            self._step_now(job_id)
        return self.detail(job_id)

    def cancel(self, job_id: int, *, actor: str) -> dict:
        with self._lock, self._db.transaction():
            job = self._get(job_id)
            if job["state"] != "running":
                raise ConflictError(f"job {job_id} is {job['state']}; only a running job can be cancelled")
            now = to_iso(utc_now())
            job_store.cancel_queued(db=self._db, job_id=job_id, finished=now, error=_error(
                "cancelled", f"job {job_id} was cancelled by {actor} before it was sent to this device"))
            job_store.update_job(db=self._db, job_id=job_id, state="cancelled", reason=f"cancelled by {actor}",
                                 updated=now)
            self._schedules.pop(job_id, None)
        return self.detail(job_id)

    def record_result(self, device_id: str, data: dict, *, outbox_id: str, seq: int) -> None:
        """A ``job_result`` record ``(outbox_id, seq)`` from a device (MQTT thread); :class:`BadDataError` for a
        malformed one."""
        result = parse_result(data)
        job = job_store.job_by_wire_id(db=self._db, wire_id=result.job_id)
        if job is None or not job_store.count_answer(db=self._db, job_id=job["id"], device_id=device_id,
                                                     outbox_id=outbox_id, seq=seq):
            raise BadDataError(f"device {device_id} answered job {result.job_id}, which was not sent to it")
        with self._lock:
            if job_store.finish_device(db=self._db, job_id=job["id"], device_id=device_id, state=result.state,
                                       finished=result.finished, result=result.result, error=result.error,
                                       from_states=("sent", "timed_out")):
                log.info("job %d on %s: %s", job["id"], device_id, result.state)
                self._step_now(job["id"])

    def step_all(self) -> None:
        with self._lock:
            for job_id in job_store.waiting_job_ids(db=self._db):
                self.step(job_id)

    def forget_schedules(self) -> None:
        """Start every rate schedule again from its last send (a replica that becomes leader: another one sent)."""
        with self._lock:
            self._schedules.clear()

    def _step_now(self, job_id: int) -> None:
        """A step right after a change when this replica leads; elsewhere the leader's next tick takes it."""
        if self._leadership.is_leader:
            try:
                self.step(job_id)
            except NotLeader as exc:
                log.info("job %d: left to the leader (%s)", job_id, exc)

    def step(self, job_id: int) -> None:
        """Time out, abort, send or complete as the plan says; writes commit together, fenced (only while this
        replica leads: :mod:`.leadership`)."""
        with self._lock, self._leadership.fenced():
            job = self._get(job_id)
            now = utc_now()
            silent = job_store.devices(db=self._db, job_id=job_id, states=("sent",)) if self._answers_settled() else []
            for row in silent:
                if from_iso(row["expires"]) <= now:
                    job_store.finish_device(db=self._db, job_id=job_id, device_id=row["device_id"],
                                            state="timed_out", finished=to_iso(now), result=None, from_states=("sent",),
                                            error=_error("no_answer", f"no result before the job expired at "
                                                                      f"{row['expires']}"))
            if job["state"] != "running":
                return
            counts = job_store.counts(db=self._db, job_id=job_id)
            limit = job["plan"]["abort_after_failures"]
            failures = counts["failed"] + counts["timed_out"]
            if limit is not None and failures >= limit and counts["queued"]:
                self._abort(job, failures, limit, now)
                return
            sent = sum(counts[s] for s in ("sent", "succeeded", "failed", "timed_out"))
            schedule = self._schedules.get(job_id) or self._schedule_from_last_send(job, sent, now)
            self._schedules[job_id] = schedule
            allowed = due(job["plan"]["rate_per_minute"], (now - schedule.since).total_seconds(), sent - schedule.sent,
                          counts["queued"])
            for row in job_store.devices(db=self._db, job_id=job_id, states=("queued",), limit=allowed):
                if not self._send(job, row["device_id"], now):
                    self._schedules.pop(job_id, None)  # the link is down: no catching up once it is back
                    break
            counts = job_store.counts(db=self._db, job_id=job_id)
            if not counts["queued"] and not counts["sent"]:
                job_store.update_job(db=self._db, job_id=job_id, state="completed", reason=None, updated=to_iso(now))
                self._schedules.pop(job_id, None)

    # --- reading ------------------------------------------------------------------------------

    def detail(self, job_id: int) -> dict:
        job = self._get(job_id)
        return {**job, "devices": job_store.devices(db=self._db, job_id=job_id),
                "counts": job_store.counts(db=self._db, job_id=job_id)}

    def list(self) -> list[dict]:
        return [{**job, "counts": job_store.counts(db=self._db, job_id=job["id"])}
                for job in job_store.list_jobs(db=self._db)]

    # --- internals ----------------------------------------------------------------------------

    def _get(self, job_id: int) -> dict:
        job = job_store.get_job(db=self._db, job_id=job_id)
        if job is None:
            raise NotFoundError(f"there is no job {job_id}")
        return job

    def _answers_settled(self) -> bool:
        """Whether a silent device may be judged now: the broker link is up and has been for the settle period, so
        the answers the broker kept for the server while it was away had their chance to arrive."""
        up_s = self._fleet.broker_connected_for_s
        return up_s is not None and up_s >= self._answer_settle_s

    def _schedule_from_last_send(self, job: dict, sent: int, now: datetime) -> _Schedule:
        """A schedule that starts now: nothing sent yet, one device at once; else the next device goes one
        interval after the last one was sent, and never sooner than now."""
        rate = job["plan"]["rate_per_minute"]
        last = job_store.last_sent(db=self._db, job_id=job["id"])
        if rate is None or not sent or last is None:
            return _Schedule(now, sent)
        return _Schedule(max(from_iso(last), now - timedelta(seconds=60 / rate)), sent - 1)

    def _send(self, job: dict, device_id: str, now) -> bool:
        """Sign and publish the job for one device; False when the broker link is down (it stays queued)."""
        expires = now + timedelta(seconds=job["plan"]["ttl_s"])
        document = JobDocument(job_id=job["wire_id"], device_id=device_id, kind=job["kind"], params=job["params"],
                               issued=to_iso(now), expires=to_iso(expires))
        envelope = sign_envelope(document.to_dict(), self._fleet.signing_key)
        if not self._fleet.publish(topics.device_topic(device_id, "jobs"), canonical_json(envelope), qos=1):
            return False
        job_store.mark_sent(db=self._db, job_id=job["id"], device_id=device_id, envelope=envelope, sent=to_iso(now),
                            expires=document.expires)
        return True

    def _abort(self, job: dict, failures: int, limit: int, now) -> None:
        queued = job_store.counts(db=self._db, job_id=job["id"])["queued"]
        reason = f"{failures} device(s) failed, the abort threshold is {limit}: {queued} not sent yet, cancelled"
        cancelled = job_store.cancel_queued(db=self._db, job_id=job["id"], finished=to_iso(now), error=_error(
            "aborted", f"not sent: job {job['id']} was aborted after {failures} device(s) failed"))
        job_store.update_job(db=self._db, job_id=job["id"], state="aborted", reason=reason, updated=to_iso(now))
        self._schedules.pop(job["id"], None)
        audit.record(self._db, actor=CONTROLLER, action="abort job", target=f"/api/jobs/{job['id']}",
                     object={"job_id": job["id"], "failures": failures, "cancelled": cancelled})
        log.warning("job %d aborted: %s", job["id"], reason)


def _error(code: str, message: str) -> dict:
    return {"code": code, "category": "job", "message": message}
