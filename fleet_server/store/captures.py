"""Captured model inputs and outputs (for retraining); ``(device_id, outbox_id, seq)`` makes a redelivery a no-op.

``data`` is the capture record as the device sent it (see
:mod:`fleet_protocol.captures`: tensors as base64), stored as JSON text;
``reason`` is its reason (``low_confidence`` for a hard example), NULL for a sampled request.
"""

from __future__ import annotations

from sqlalchemy import select

from ._json import dumps, loads
from .db import Database
from .schema import captures

MAX_QUERY_ROWS = 1_000
_SUMMARY = [captures.c[name] for name in ("id", "device_id", "outbox_id", "seq", "ts", "model", "version",
                                          "scored_on", "reason", "size", "received")]


def insert_captures(*, db: Database, device_id: str, outbox_id: str, records: list[dict], received: str) -> int:
    """Insert telemetry records of kind ``capture`` (already validated); return how many were new."""
    rows = []
    for r in records:
        text = dumps(r["data"])
        rows.append({"device_id": device_id, "outbox_id": outbox_id, "seq": r["seq"], "ts": r["ts"],
                     "model": r["data"]["model"], "version": r["data"].get("version"),
                     "scored_on": r["data"].get("scored_on", "local"), "reason": r["data"].get("reason"),
                     "size": len(text), "data": text, "received": received})
    return db.insert_new(captures, rows)


def list_captures(*, db: Database, model: str | None = None, version: int | None = None,
                  device_id: str | None = None, reason: str | None = None, after_id: int = 0,
                  limit: int = 100) -> list[dict]:
    """Oldest first, without the tensors; page with ``after_id``."""
    query = select(*_SUMMARY).where(captures.c.id > after_id)
    for column, value in (("model", model), ("version", version), ("device_id", device_id), ("reason", reason)):
        if value is not None:
            query = query.where(captures.c[column] == value)
    return db.rows(query.order_by(captures.c.id).limit(min(max(limit, 1), MAX_QUERY_ROWS)))


def get_capture(*, db: Database, capture_id: int) -> dict | None:
    """One capture with its ``data`` (the record as sent: tensors in base64)."""
    record = db.row(select(*_SUMMARY, captures.c.data).where(captures.c.id == capture_id))
    if record is None:
        return None
    record["data"] = loads(record["data"])
    return record
