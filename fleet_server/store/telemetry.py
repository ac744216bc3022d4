"""Telemetry records; ``(device_id, outbox_id, seq)`` makes a redelivered record a no-op.

Ingest is the hot path (B3, B8): a batch is one ``executemany`` in one
transaction (:meth:`.db.Database.insert_new`), and each record's data is serialised by one encoder built once
(``json.dumps`` with options builds a new encoder per call, which costs about
a fifth of the serialisation); the text is the same as :func:`._json.dumps`.
"""

from __future__ import annotations

import json

from sqlalchemy import select

from ._json import loads
from .db import Database
from .schema import telemetry

MAX_QUERY_ROWS = 1_000
_encode_data = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode
_t = telemetry.c


def insert_records(*, db: Database, device_id: str, outbox_id: str, records: list[dict], received: str) -> int:
    """Insert a batch in one transaction, ignoring records already stored; return how many were new."""
    return db.insert_new(telemetry, [{"device_id": device_id, "outbox_id": outbox_id, "seq": r["seq"], "ts": r["ts"],
                                      "kind": r["kind"], "data": _encode_data(r["data"]), "received": received}
                                     for r in records])


def query(*, db: Database, device_id: str | None = None, kind: str | None = None, since: str | None = None,
          until: str | None = None, limit: int = 100) -> list[dict]:
    """Newest first; ``since`` and ``until`` bound the record's own time (``ts``)."""
    statement = select(*(c for c in telemetry.columns if c.name != "rolled"))  # rolled is retention's business
    for compare, value in ((_t.device_id.__eq__, device_id), (_t.kind.__eq__, kind), (_t.ts.__ge__, since),
                           (_t.ts.__le__, until)):
        if value is not None:
            statement = statement.where(compare(value))
    rows = db.rows(statement.order_by(_t.received.desc(), _t.ts.desc(), _t.seq.desc())
                   .limit(min(max(limit, 1), MAX_QUERY_ROWS)))
    return [{**row, "data": loads(row["data"])} for row in rows]
