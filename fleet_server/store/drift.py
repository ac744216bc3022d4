"""Drift tables: each model version's reference, the windows devices sent, and the alerts raised.

A window's ``(device_id, outbox_id, seq)`` makes a redelivery a no-op, as
for all telemetry. An alert row is open while ``cleared`` is NULL; at most
one open alert exists per (model, version, device, feature).
"""

from __future__ import annotations

from sqlalchemy import delete, insert, select, update

from ._json import dumps, loads
from .db import Database
from .schema import devices, drift_alerts, drift_references, drift_windows


def put_reference(*, db: Database, model: str, version: int, reference_id: str, reference: dict, source: str,
                  created: str) -> None:
    with db.transaction() as conn:
        conn.execute(db.upsert(drift_references, ("model", "version")).values(
            model=model, version=version, reference_id=reference_id, reference=dumps(reference), source=source,
            created=created))


def get_reference(*, db: Database, model: str, version: int) -> dict | None:
    row = db.row(select(drift_references.c.reference_id, drift_references.c.reference, drift_references.c.source,
                        drift_references.c.created)
                 .where(drift_references.c.model == model, drift_references.c.version == version))
    return None if row is None else {**row, "reference": loads(row["reference"])}


def delete_version(*, db: Database, model: str, version: int) -> None:
    """Forget a deleted model version's reference, windows and alerts: without the reference nothing reads them,
    and the next version registered may take the same number (windows of another reference must not merge)."""
    with db.transaction() as conn:
        for table in (drift_references, drift_windows, drift_alerts):
            conn.execute(delete(table).where(table.c.model == model, table.c.version == version))


def insert_windows(*, db: Database, device_id: str, outbox_id: str, windows: list[dict], received: str) -> int:
    """Insert validated windows (``seq``, ``ts``, ``model``, ``version``, ``rows``, ``counts``); return how many
    were new."""
    return db.insert_new(drift_windows, [
        {"device_id": device_id, "outbox_id": outbox_id, "seq": w["seq"], "ts": w["ts"], "model": w["model"],
         "version": w["version"], "rows": w["rows"], "counts": dumps(w["counts"]), "received": received}
        for w in windows])


def windows(*, db: Database, model: str, version: int, since: str | None = None, until: str | None = None,
            device_id: str | None = None) -> list[dict]:
    """Windows of a version (``since <= ts <= until``), oldest first, each with the tags its device has now."""
    w = drift_windows.c
    query = (select(w.device_id, w.ts, w.rows, w.counts, devices.c.tags)
             .select_from(drift_windows.outerjoin(devices, devices.c.id == w.device_id))
             .where(w.model == model, w.version == version))
    if since is not None:
        query = query.where(w.ts >= since)
    if until is not None:
        query = query.where(w.ts <= until)
    if device_id is not None:
        query = query.where(w.device_id == device_id)
    return [{**r, "counts": loads(r["counts"]), "tags": loads(r["tags"], {})}
            for r in db.rows(query.order_by(w.ts, w.seq))]


def open_alerts(*, db: Database, model: str, version: int, device_id: str) -> dict[str, int]:
    """``{feature: alert id}`` of the open alerts of one device's version."""
    a = drift_alerts.c
    with db.read() as conn:
        return dict(conn.execute(select(a.feature, a.id).where(a.model == model, a.version == version,
                                                               a.device_id == device_id, a.cleared.is_(None))).all())


def raise_alert(*, db: Database, model: str, version: int, device_id: str, feature: str, raised: str,
                statistics: dict) -> None:
    with db.transaction() as conn:
        conn.execute(insert(drift_alerts).values(model=model, version=version, device_id=device_id, feature=feature,
                                                 raised=raised, statistics=dumps(statistics)))


def clear_alert(*, db: Database, alert_id: int, cleared: str) -> None:
    with db.transaction() as conn:
        conn.execute(update(drift_alerts).where(drift_alerts.c.id == alert_id, drift_alerts.c.cleared.is_(None))
                     .values(cleared=cleared))


def list_alerts(*, db: Database, model: str | None = None, version: int | None = None, open_only: bool = False,
                limit: int = 500) -> list[dict]:
    """Newest first."""
    query = select(drift_alerts)
    for column, value in (("model", model), ("version", version)):
        if value is not None:
            query = query.where(drift_alerts.c[column] == value)
    if open_only:
        query = query.where(drift_alerts.c.cleared.is_(None))
    rows = db.rows(query.order_by(drift_alerts.c.id.desc()).limit(min(max(limit, 1), 1000)))
    return [{**row, "statistics": loads(row["statistics"])} for row in rows]
