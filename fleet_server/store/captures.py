"""Captured model inputs and outputs (for retraining); ``(device_id, outbox_id, seq)`` makes a redelivery a no-op.

``data`` is the capture record as the device sent it (see
:mod:`fleet_protocol.captures`: tensors as base64), stored as JSON text;
``reason`` is its reason (``low_confidence`` for a hard example), NULL for a sampled request.
"""

from __future__ import annotations

from ._json import dumps, loads
from .db import Database

MAX_QUERY_ROWS = 1_000
_SUMMARY = "id, device_id, outbox_id, seq, ts, model, version, scored_on, reason, size, received"


def insert_captures(*, db: Database, device_id: str, outbox_id: str, records: list[dict], received: str) -> int:
    """Insert telemetry records of kind ``capture`` (already validated); return how many were new."""
    rows = []
    for r in records:
        text = dumps(r["data"])
        rows.append((device_id, outbox_id, r["seq"], r["ts"], r["data"]["model"], r["data"].get("version"),
                     r["data"].get("scored_on", "local"), r["data"].get("reason"), len(text), text, received))
    return db.insert_new("captures", ("device_id", "outbox_id", "seq", "ts", "model", "version", "scored_on", "reason",
                                      "size", "data", "received"), rows)


def list_captures(*, db: Database, model: str | None = None, version: int | None = None,
                  device_id: str | None = None, reason: str | None = None, after_id: int = 0,
                  limit: int = 100) -> list[dict]:
    """Oldest first, without the tensors; page with ``after_id``."""
    clauses, params = ["id > ?"], [after_id]
    for column, value in (("model", model), ("version", version), ("device_id", device_id), ("reason", reason)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    params.append(min(max(limit, 1), MAX_QUERY_ROWS))
    cursor = db.connection().execute(f"SELECT {_SUMMARY} FROM captures WHERE {' AND '.join(clauses)} "
                                     "ORDER BY id LIMIT ?", params)
    names = [c[0] for c in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def get_capture(*, db: Database, capture_id: int) -> dict | None:
    """One capture with its ``data`` (the record as sent: tensors in base64)."""
    cursor = db.connection().execute(f"SELECT {_SUMMARY}, data FROM captures WHERE id = ?", [capture_id])
    row = cursor.fetchone()
    if row is None:
        return None
    record = dict(zip([c[0] for c in cursor.description], row))
    record["data"] = loads(record["data"])
    return record
