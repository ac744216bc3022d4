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

from ._json import dumps, loads
from .db import Database

DEVICE_STATES = ("queued", "sent", "succeeded", "failed", "timed_out", "cancelled")


def _job(row: dict) -> dict:
    return {**row, "params": loads(row["params"]), "target": loads(row["target"]), "plan": loads(row["plan"])}


def _device(row: dict) -> dict:
    return {"device_id": row["device_id"], "position": row["position"], "state": row["state"], "sent": row["sent"],
            "expires": row["expires"], "finished": row["finished"], "answers": row["answers"],
            "result": loads(row["result"]), "error": loads(row["error"])}


def insert_job(*, db: Database, wire_id: str, kind: str, params: dict, target: dict, plan: dict, devices: list[str],
               created_by: str | None, created: str) -> int:
    with db.transaction() as tx:
        job_id = tx["jobs"].insert({"wire_id": wire_id, "kind": kind, "params": dumps(params), "target": dumps(target),
                                    "plan": dumps(plan), "state": "running", "reason": None,
                                    "created_by": created_by, "created": created, "updated": created}).last_pk
        tx["job_devices"].insert_all([{"job_id": job_id, "device_id": d, "position": i, "state": "queued"}
                                      for i, d in enumerate(devices)])
    return job_id


def get_job(*, db: Database, job_id: int) -> dict | None:
    rows = list(db.connection()["jobs"].rows_where("id = ?", [job_id]))
    return _job(rows[0]) if rows else None


def job_by_wire_id(*, db: Database, wire_id: str) -> dict | None:
    rows = list(db.connection()["jobs"].rows_where("wire_id = ?", [wire_id]))
    return _job(rows[0]) if rows else None


def list_jobs(*, db: Database, states: tuple[str, ...] | None = None) -> list[dict]:
    where, params = None, []
    if states:
        where, params = f"state IN ({', '.join('?' for _ in states)})", list(states)
    return [_job(r) for r in db.connection()["jobs"].rows_where(where, params, order_by="id")]


def waiting_job_ids(*, db: Database) -> list[int]:
    """Jobs the controller still has work on: running ones, and stopped ones with devices not answered yet."""
    return [row[0] for row in db.connection().execute(
        "SELECT id FROM jobs WHERE state = 'running' OR id IN (SELECT job_id FROM job_devices WHERE state = 'sent') "
        "ORDER BY id").fetchall()]


def update_job(*, db: Database, job_id: int, state: str, reason: str | None, updated: str) -> None:
    with db.transaction() as tx:
        tx.execute("UPDATE jobs SET state = ?, reason = ?, updated = ? WHERE id = ?", [state, reason, updated, job_id])


def devices(*, db: Database, job_id: int, states: tuple[str, ...] | None = None, limit: int | None = None) -> list[dict]:
    where, params = "job_id = ?", [job_id]
    if states:
        where += f" AND state IN ({', '.join('?' for _ in states)})"
        params += list(states)
    rows = db.connection()["job_devices"].rows_where(where, params, order_by="position", limit=limit)
    return [_device(r) for r in rows]


def envelope(*, db: Database, job_id: int, device_id: str) -> dict | None:
    """The signed job document sent to the device (None before it was sent)."""
    rows = list(db.connection()["job_devices"].rows_where("job_id = ? AND device_id = ?", [job_id, device_id]))
    return loads(rows[0]["envelope"]) if rows else None


def last_sent(*, db: Database, job_id: int) -> str | None:
    """When the job was last sent to one of its devices (None before the first)."""
    return db.connection().execute("SELECT MAX(sent) FROM job_devices WHERE job_id = ?", [job_id]).fetchone()[0]


def mark_sent(*, db: Database, job_id: int, device_id: str, envelope: dict, sent: str, expires: str) -> None:
    with db.transaction() as tx:
        tx.execute("UPDATE job_devices SET state = 'sent', envelope = ?, sent = ?, expires = ? "
                   "WHERE job_id = ? AND device_id = ?", [dumps(envelope), sent, expires, job_id, device_id])


def finish_device(*, db: Database, job_id: int, device_id: str, state: str, finished: str, result: dict | None,
                  error: dict | None, from_states: tuple[str, ...]) -> bool:
    """Set a device's outcome if it is in one of ``from_states``; False (nothing changed) otherwise."""
    marks = ", ".join("?" for _ in from_states)
    with db.transaction() as tx:
        return tx.execute(f"UPDATE job_devices SET state = ?, finished = ?, result = ?, error = ? "
                          f"WHERE job_id = ? AND device_id = ? AND state IN ({marks})",
                          [state, finished, dumps(result), dumps(error), job_id, device_id, *from_states]).rowcount == 1


def count_answer(*, db: Database, job_id: int, device_id: str, outbox_id: str, seq: int) -> bool:
    """Count the device's answer carried by telemetry record ``(outbox_id, seq)``, once however often that record
    is delivered; False when the device is not part of the job."""
    with db.transaction() as tx:
        if tx.execute("SELECT 1 FROM job_devices WHERE job_id = ? AND device_id = ?",
                      [job_id, device_id]).fetchone() is None:
            return False
        if tx.execute("INSERT OR IGNORE INTO job_answers (job_id, device_id, outbox_id, seq) VALUES (?, ?, ?, ?)",
                      [job_id, device_id, outbox_id, seq]).rowcount:
            tx.execute("UPDATE job_devices SET answers = answers + 1 WHERE job_id = ? AND device_id = ?",
                       [job_id, device_id])
        return True


def cancel_queued(*, db: Database, job_id: int, finished: str, error: dict) -> int:
    with db.transaction() as tx:
        return tx.execute("UPDATE job_devices SET state = 'cancelled', finished = ?, error = ? "
                          "WHERE job_id = ? AND state = 'queued'", [finished, dumps(error), job_id]).rowcount


def counts(*, db: Database, job_id: int) -> dict[str, int]:
    found = dict(db.connection().execute("SELECT state, COUNT(*) FROM job_devices WHERE job_id = ? GROUP BY state",
                                         [job_id]).fetchall())
    return {state: found.get(state, 0) for state in DEVICE_STATES}
