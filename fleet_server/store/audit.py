"""The audit log: one row per change made through the API; append-only (SQLite triggers refuse UPDATE and DELETE)."""

from __future__ import annotations

from .db import Database

_COLUMNS = ("id", "ts", "actor", "action", "target", "status")


def append(*, db: Database, ts: str, actor: str, action: str, target: str, status: int) -> None:
    with db.transaction() as tx:
        tx["audit_log"].insert({"ts": ts, "actor": actor, "action": action, "target": target, "status": status})


def list_entries(*, db: Database, after_id: int = 0, actor: str | None = None, limit: int = 200) -> list[dict]:
    """Entries with an id above ``after_id``, oldest first."""
    sql = f"SELECT {', '.join(_COLUMNS)} FROM audit_log WHERE id > ?"
    params: list = [after_id]
    if actor is not None:
        sql += " AND actor = ?"
        params.append(actor)
    rows = db.connection().execute(sql + " ORDER BY id LIMIT ?", [*params, limit]).fetchall()
    return [dict(zip(_COLUMNS, row)) for row in rows]
