"""Telemetry rollups and retention in the store: roll raw rows up once, prune old rows in bounded batches.

:func:`roll_up` takes raw telemetry rows not yet rolled up (``rolled = 0``),
adds them into ``telemetry_minute`` and ``telemetry_hour`` (what each record
adds: :mod:`fleet_server.telemetry_rollup`) and marks them rolled, all in one
transaction: a record is counted once, however often a device redelivered it
(a redelivery never makes a second raw row) and however a crash falls. Only
one writer may roll up at a time (the leader: rows are merged read, add,
write); ingest inserting new raw rows meanwhile is fine.

:func:`prune` deletes one batch of rows older than a cutoff from one table,
by primary key through a bounded subquery, so a large prune is many short
transactions, never one long lock. Raw telemetry is pruned only once rolled
up. What runs these, and when, is :mod:`fleet_server.retention`'s business.
"""

from __future__ import annotations

from sqlalchemy import Table, and_, bindparam, delete, insert, select, tuple_, update

from .. import telemetry_rollup as rollup
from ._json import loads
from .db import Database
from .schema import captures, drift_windows, telemetry, telemetry_hour, telemetry_minute

TABLES: dict[str, Table] = {"minute": telemetry_minute, "hour": telemetry_hour}
MAX_QUERY_ROWS = 1_000
_IN_CHUNK = 500  # values per IN list when reading the rollup rows a batch adds to
_VALUES = rollup.SUMS + rollup.MAXIMA + rollup.MINIMA + ("latency_bins",)


def roll_up(*, db: Database, limit: int) -> int:
    """Roll up to ``limit`` raw rows not yet rolled up into both resolutions; return how many (0: none left)."""
    t = telemetry
    with db.transaction() as conn:
        rows = conn.execute(select(t.c.device_id, t.c.outbox_id, t.c.seq, t.c.ts, t.c.kind, t.c.data, t.c.received)
                            .where(t.c.rolled == 0).limit(limit)).all()
        if not rows:
            return 0
        records = [{"device_id": r.device_id, "ts": r.ts, "kind": r.kind, "data": loads(r.data, {}),
                    "received": r.received} for r in rows]
        for resolution, table in TABLES.items():
            _add(conn, table, rollup.aggregate(records, rollup.RESOLUTIONS[resolution]))
        conn.execute(update(t).where(t.c.device_id == bindparam("k_device"), t.c.outbox_id == bindparam("k_outbox"),
                                     t.c.seq == bindparam("k_seq")).values(rolled=1),
                     [{"k_device": r.device_id, "k_outbox": r.outbox_id, "k_seq": r.seq} for r in rows])
        return len(rows)


def _add(conn, table: Table, adds: dict[rollup.Key, dict]) -> None:
    """Merge rows into ``table``: insert the new keys, add into the stored ones."""
    stored = _stored(conn, table, adds)
    new, changed = [], []
    for key, row in adds.items():
        if key in stored:
            merged = stored[key]
            rollup.merge_into(merged, {c: row[c] for c in _VALUES})
            changed.append({**{f"k_{c}": v for c, v in zip(rollup.KEY, key)}, **{c: merged[c] for c in _VALUES}})
        else:
            new.append(row)
    if new:
        conn.execute(insert(table), new)
    if changed:
        c = table.c
        conn.execute(update(table).where(c.device_id == bindparam("k_device_id"), c.model == bindparam("k_model"),
                                         c.version == bindparam("k_version"), c.bucket == bindparam("k_bucket"))
                     .values({name: bindparam(name) for name in _VALUES}), changed)


def _stored(conn, table: Table, keys: dict[rollup.Key, dict]) -> dict[rollup.Key, dict]:
    """The stored rows of ``keys`` (read by bucket and device: a superset, narrowed here)."""
    buckets = sorted({k[3] for k in keys})
    devices = sorted({k[0] for k in keys})
    found: dict[rollup.Key, dict] = {}
    for i in range(0, len(devices), _IN_CHUNK):
        query = select(table).where(table.c.bucket.in_(buckets), table.c.device_id.in_(devices[i:i + _IN_CHUNK]))
        for row in conn.execute(query).mappings():
            key = (row["device_id"], row["model"], row["version"], row["bucket"])
            if key in keys:
                found[key] = dict(row)
    return found


# --- retention ------------------------------------------------------------------------------------------------------

def _age_rules() -> dict[str, tuple[Table, object]]:
    """Each prunable table and the condition (on a ``cutoff`` bind parameter) that makes one of its rows old."""
    cutoff = bindparam("cutoff")
    return {"telemetry": (telemetry, and_(telemetry.c.received < cutoff, telemetry.c.rolled == 1)),
            "drift_windows": (drift_windows, drift_windows.c.received < cutoff),
            "captures": (captures, captures.c.received < cutoff),
            "telemetry_minute": (telemetry_minute, telemetry_minute.c.bucket < cutoff),
            "telemetry_hour": (telemetry_hour, telemetry_hour.c.bucket < cutoff)}


PRUNABLE = tuple(_age_rules())


def prune(*, db: Database, table: str, cutoff: str, limit: int) -> int:
    """Delete up to ``limit`` rows of ``table`` (one of :data:`PRUNABLE`) older than ``cutoff`` (ISO time; raw
    telemetry only once rolled up); return how many were deleted (fewer than ``limit``: none are left)."""
    target, old = _age_rules()[table]
    key = tuple_(*target.primary_key.columns)
    batch = select(*target.primary_key.columns).where(old).limit(limit)
    with db.transaction() as conn:
        return conn.execute(delete(target).where(key.in_(batch)), {"cutoff": cutoff}).rowcount


# --- reading --------------------------------------------------------------------------------------------------------

def query(*, db: Database, resolution: str, device_id: str | None = None, model: str | None = None,
          since: str | None = None, until: str | None = None, limit: int = 100) -> list[dict]:
    """Rollup rows of one resolution, newest bucket first, as :func:`fleet_server.telemetry_rollup.public` gives."""
    table = TABLES[resolution]
    c = table.c
    clauses = [compare(value) for compare, value in ((c.device_id.__eq__, device_id), (c.model.__eq__, model),
                                                      (c.bucket.__ge__, since), (c.bucket.__le__, until))
               if value is not None]
    statement = (select(table).where(*clauses).order_by(c.bucket.desc(), c.device_id, c.model, c.version)
                 .limit(min(max(limit, 1), MAX_QUERY_ROWS)))
    with db.read() as conn:
        return [rollup.public(dict(row), resolution) for row in conn.execute(statement).mappings()]
