"""Drift tables: each model version's reference, the windows devices sent, and the alerts raised.

A window's ``(device_id, outbox_id, seq)`` makes a redelivery a no-op, as
for all telemetry. An alert row is open while ``cleared`` is NULL; at most
one open alert exists per (model, version, device, feature).
"""

from __future__ import annotations

from ._json import dumps, loads
from .db import Database


def put_reference(*, db: Database, model: str, version: int, reference_id: str, reference: dict, source: str,
                  created: str) -> None:
    with db.transaction() as tx:
        tx.execute("INSERT OR REPLACE INTO drift_references (model, version, reference_id, reference, source, created)"
                   " VALUES (?, ?, ?, ?, ?, ?)", [model, version, reference_id, dumps(reference), source, created])


def get_reference(*, db: Database, model: str, version: int) -> dict | None:
    row = db.connection().execute("SELECT reference_id, reference, source, created FROM drift_references "
                                  "WHERE model = ? AND version = ?", [model, version]).fetchone()
    if row is None:
        return None
    return {"reference_id": row[0], "reference": loads(row[1]), "source": row[2], "created": row[3]}


def delete_version(*, db: Database, model: str, version: int) -> None:
    """Forget a deleted model version's reference, windows and alerts: without the reference nothing reads them,
    and the next version registered may take the same number (windows of another reference must not merge)."""
    with db.transaction() as tx:
        for table in ("drift_references", "drift_windows", "drift_alerts"):
            tx.execute(f"DELETE FROM {table} WHERE model = ? AND version = ?", [model, version])


def insert_windows(*, db: Database, device_id: str, outbox_id: str, windows: list[dict], received: str) -> int:
    """Insert validated windows (``seq``, ``ts``, ``model``, ``version``, ``rows``, ``counts``); return how many
    were new."""
    rows = [(device_id, outbox_id, w["seq"], w["ts"], w["model"], w["version"], w["rows"], dumps(w["counts"]),
             received) for w in windows]
    return db.insert_new("drift_windows", ("device_id", "outbox_id", "seq", "ts", "model", "version", "rows", "counts",
                                           "received"), rows)


def windows(*, db: Database, model: str, version: int, since: str | None = None, until: str | None = None,
            device_id: str | None = None) -> list[dict]:
    """Windows of a version (``since <= ts <= until``), oldest first, each with the tags its device has now."""
    clauses, params = ["w.model = ?", "w.version = ?"], [model, version]
    for clause, value in (("w.ts >= ?", since), ("w.ts <= ?", until)):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    if device_id is not None:
        clauses.append("w.device_id = ?")
        params.append(device_id)
    cursor = db.connection().execute(
        "SELECT w.device_id, w.ts, w.rows, w.counts, d.tags FROM drift_windows w LEFT JOIN devices d ON d.id = "
        f"w.device_id WHERE {' AND '.join(clauses)} ORDER BY w.ts, w.seq", params)
    return [{"device_id": r[0], "ts": r[1], "rows": r[2], "counts": loads(r[3]), "tags": loads(r[4], {})}
            for r in cursor.fetchall()]


def open_alerts(*, db: Database, model: str, version: int, device_id: str) -> dict[str, int]:
    """``{feature: alert id}`` of the open alerts of one device's version."""
    cursor = db.connection().execute("SELECT feature, id FROM drift_alerts WHERE model = ? AND version = ? AND "
                                     "device_id = ? AND cleared IS NULL", [model, version, device_id])
    return dict(cursor.fetchall())


def raise_alert(*, db: Database, model: str, version: int, device_id: str, feature: str, raised: str,
                statistics: dict) -> None:
    with db.transaction() as tx:
        tx.execute("INSERT INTO drift_alerts (model, version, device_id, feature, raised, statistics) "
                   "VALUES (?, ?, ?, ?, ?, ?)", [model, version, device_id, feature, raised, dumps(statistics)])


def clear_alert(*, db: Database, alert_id: int, cleared: str) -> None:
    with db.transaction() as tx:
        tx.execute("UPDATE drift_alerts SET cleared = ? WHERE id = ? AND cleared IS NULL", [cleared, alert_id])


def list_alerts(*, db: Database, model: str | None = None, version: int | None = None, open_only: bool = False,
                limit: int = 500) -> list[dict]:
    """Newest first."""
    clauses, params = [], []
    for column, value in (("model", model), ("version", version)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if open_only:
        clauses.append("cleared IS NULL")
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    cursor = db.connection().execute(
        f"SELECT id, model, version, device_id, feature, raised, cleared, statistics FROM drift_alerts {where} "
        "ORDER BY id DESC LIMIT ?", [*params, min(max(limit, 1), 1000)])
    names = [c[0] for c in cursor.description]
    return [{**dict(zip(names, row)), "statistics": loads(row[-1])} for row in cursor.fetchall()]
