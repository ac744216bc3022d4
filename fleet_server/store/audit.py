"""The audit log: one row per change made through the API; append-only (SQLite triggers refuse UPDATE and DELETE).

``object`` is a JSON map of what the change acted on (see :mod:`fleet_server.audit`); ``{}`` for rows written
before the column existed."""

from __future__ import annotations

from ._json import dumps, loads
from .db import Database

_COLUMNS = ("id", "ts", "actor", "action", "target", "status", "object")


def append(*, db: Database, ts: str, actor: str, action: str, target: str, status: int,
           object: dict | None = None) -> None:  # noqa: A002 - the column is called object
    with db.transaction() as tx:
        tx["audit_log"].insert({"ts": ts, "actor": actor, "action": action, "target": target, "status": status,
                                "object": dumps(object or {})})


def list_entries(*, db: Database, after_id: int = 0, actor: str | None = None, limit: int = 200) -> list[dict]:
    """Entries with an id above ``after_id``, oldest first."""
    sql = f"SELECT {', '.join(_COLUMNS)} FROM audit_log WHERE id > ?"
    params: list = [after_id]
    if actor is not None:
        sql += " AND actor = ?"
        params.append(actor)
    rows = db.connection().execute(sql + " ORDER BY id LIMIT ?", [*params, limit]).fetchall()
    return [{**dict(zip(_COLUMNS, row)), "object": loads(row[-1], {})} for row in rows]
