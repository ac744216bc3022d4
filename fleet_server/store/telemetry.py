"""Telemetry records; ``(device_id, outbox_id, seq)`` makes a redelivered record a no-op.

Ingest is the hot path (B3, B8): a batch is one ``executemany`` in one
transaction, and each record's data is serialised by one encoder built once
(``json.dumps`` with options builds a new encoder per call, which costs about
a fifth of the serialisation); the text is the same as :func:`._json.dumps`.
"""

from __future__ import annotations

import json

from ._json import loads
from .db import Database

MAX_QUERY_ROWS = 1_000
_encode_data = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode


def insert_records(*, db: Database, device_id: str, outbox_id: str, records: list[dict], received: str) -> int:
    """Insert a batch in one transaction, ignoring records already stored; return how many were new."""
    rows = [(device_id, outbox_id, r["seq"], r["ts"], r["kind"], _encode_data(r["data"]), received) for r in records]
    return db.insert_new("telemetry", ("device_id", "outbox_id", "seq", "ts", "kind", "data", "received"), rows)


def query(*, db: Database, device_id: str | None = None, kind: str | None = None, limit: int = 100) -> list[dict]:
    """Newest first."""
    clauses, params = [], []
    for column, value in (("device_id", device_id), ("kind", kind)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    rows = db.connection()["telemetry"].rows_where(" AND ".join(clauses) or None, params,
                                                    order_by="received DESC, ts DESC, seq DESC",
                                                    limit=min(max(limit, 1), MAX_QUERY_ROWS))
    return [{**row, "data": loads(row["data"])} for row in rows]
