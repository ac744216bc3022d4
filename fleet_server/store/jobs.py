"""Remote jobs and their per-device state.

A ``jobs`` row is one operator request: the kind and params, the target as
given (``{devices, selector, group}``), the staging plan (``rate_per_minute``,
``abort_after_failures``, ``ttl_s``), its state (running, completed, aborted,
cancelled) with the reason, and ``wire_id``, the id devices see (unique, with a
random part, so a server with a fresh data dir never reuses one a device
remembers). A ``job_devices`` row per targeted device, in delivery order
(``position``): queued, sent (with the signed envelope and its expiry),
succeeded or failed (the device's result or ``{code, category, message}``),
timed_out (no answer before the expiry) or cancelled; ``answers`` counts the
results the device sent, a redelivered job's answer included. A ``job_answers``
row per answer, keyed by the telemetry record that carried it (``outbox_id``,
``seq``), makes a redelivered telemetry batch count nothing more.
"""

from __future__ import annotations

from sqlalchemy import func, insert, select, update

from ._json import dumps, loads
from .db import Database
from .schema import job_answers, job_devices, jobs

DEVICE_STATES = ("queued", "sent", "succeeded", "failed", "timed_out", "cancelled")
_jd = job_devices.c


def _job(row: dict) -> dict:
    return {**row, "params": loads(row["params"]), "target": loads(row["target"]), "plan": loads(row["plan"])}


def _device(row: dict) -> dict:
    return {"device_id": row["device_id"], "position": row["position"], "state": row["state"], "sent": row["sent"],
            "expires": row["expires"], "finished": row["finished"], "answers": row["answers"],
            "result": loads(row["result"]), "error": loads(row["error"])}


def insert_job(*, db: Database, wire_id: str, kind: str, params: dict, target: dict, plan: dict, devices: list[str],
               created_by: str | None, created: str) -> int:
    with db.transaction() as conn:
        job_id = conn.execute(insert(jobs).values(
            wire_id=wire_id, kind=kind, params=dumps(params), target=dumps(target), plan=dumps(plan), state="running",
            reason=None, created_by=created_by, created=created, updated=created)).inserted_primary_key[0]
        if devices:
            conn.execute(insert(job_devices), [{"job_id": job_id, "device_id": d, "position": i, "state": "queued"}
                                               for i, d in enumerate(devices)])
    return job_id


def get_job(*, db: Database, job_id: int) -> dict | None:
    row = db.row(select(jobs).where(jobs.c.id == job_id))
    return _job(row) if row else None


def job_by_wire_id(*, db: Database, wire_id: str) -> dict | None:
    row = db.row(select(jobs).where(jobs.c.wire_id == wire_id))
    return _job(row) if row else None


def list_jobs(*, db: Database, states: tuple[str, ...] | None = None) -> list[dict]:
    query = select(jobs)
    if states:
        query = query.where(jobs.c.state.in_(states))
    return [_job(r) for r in db.rows(query.order_by(jobs.c.id))]


def waiting_job_ids(*, db: Database) -> list[int]:
    """Jobs the controller still has work on: running ones, and stopped ones with devices not answered yet."""
    sent = select(_jd.job_id).where(_jd.state == "sent")
    with db.read() as conn:
        return list(conn.execute(select(jobs.c.id).where((jobs.c.state == "running") | jobs.c.id.in_(sent))
                                 .order_by(jobs.c.id)).scalars())


def update_job(*, db: Database, job_id: int, state: str, reason: str | None, updated: str) -> None:
    with db.transaction() as conn:
        conn.execute(update(jobs).where(jobs.c.id == job_id).values(state=state, reason=reason, updated=updated))


def devices(*, db: Database, job_id: int, states: tuple[str, ...] | None = None, limit: int | None = None) -> list[dict]:
    query = select(job_devices).where(_jd.job_id == job_id)
    if states:
        query = query.where(_jd.state.in_(states))
    return [_device(r) for r in db.rows(query.order_by(_jd.position).limit(limit))]


def envelope(*, db: Database, job_id: int, device_id: str) -> dict | None:
    """The signed job document sent to the device (None before it was sent)."""
    return loads(db.scalar(select(_jd.envelope).where(_jd.job_id == job_id, _jd.device_id == device_id)))


def last_sent(*, db: Database, job_id: int) -> str | None:
    """When the job was last sent to one of its devices (None before the first)."""
    return db.scalar(select(func.max(_jd.sent)).where(_jd.job_id == job_id))


def _device_row(job_id: int, device_id: str):
    return update(job_devices).where(_jd.job_id == job_id, _jd.device_id == device_id)


def mark_sent(*, db: Database, job_id: int, device_id: str, envelope: dict, sent: str, expires: str) -> None:
    with db.transaction() as conn:
        conn.execute(_device_row(job_id, device_id).values(state="sent", envelope=dumps(envelope), sent=sent,
                                                           expires=expires))


def finish_device(*, db: Database, job_id: int, device_id: str, state: str, finished: str, result: dict | None,
                  error: dict | None, from_states: tuple[str, ...]) -> bool:
    """Set a device's outcome if it is in one of ``from_states``; False (nothing changed) otherwise."""
    with db.transaction() as conn:
        return conn.execute(_device_row(job_id, device_id).where(_jd.state.in_(from_states)).values(
            state=state, finished=finished, result=dumps(result), error=dumps(error))).rowcount == 1


def count_answer(*, db: Database, job_id: int, device_id: str, outbox_id: str, seq: int) -> bool:
    """Count the device's answer carried by telemetry record ``(outbox_id, seq)``, once however often that record
    is delivered; False when the device is not part of the job."""
    with db.transaction() as conn:
        if conn.execute(select(1).where(_jd.job_id == job_id, _jd.device_id == device_id)).first() is None:
            return False
        if conn.execute(db.insert_ignoring(job_answers).values(job_id=job_id, device_id=device_id,
                                                               outbox_id=outbox_id, seq=seq)).rowcount:
            conn.execute(_device_row(job_id, device_id).values(answers=_jd.answers + 1))
        return True


def cancel_queued(*, db: Database, job_id: int, finished: str, error: dict) -> int:
    with db.transaction() as conn:
        return conn.execute(update(job_devices).where(_jd.job_id == job_id, _jd.state == "queued")
                            .values(state="cancelled", finished=finished, error=dumps(error))).rowcount


def counts(*, db: Database, job_id: int) -> dict[str, int]:
    with db.read() as conn:
        found = dict(conn.execute(select(_jd.state, func.count()).where(_jd.job_id == job_id)
                                  .group_by(_jd.state)).all())
    return {state: found.get(state, 0) for state in DEVICE_STATES}
