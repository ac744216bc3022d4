"""The audit log: one row per change made through the API; append-only (triggers refuse UPDATE and DELETE).

``object`` is a JSON map of what the change acted on (see :mod:`fleet_server.audit`); ``{}`` for rows written
before the column existed."""

from __future__ import annotations

from sqlalchemy import insert, select

from ._json import dumps, loads
from .db import Database
from .schema import audit_log


def append(*, db: Database, ts: str, actor: str, action: str, target: str, status: int,
           object: dict | None = None) -> None:  # noqa: A002 - the column is called object
    with db.transaction() as conn:
        conn.execute(insert(audit_log).values(ts=ts, actor=actor, action=action, target=target, status=status,
                                              object=dumps(object or {})))


def list_entries(*, db: Database, after_id: int = 0, actor: str | None = None, limit: int = 200) -> list[dict]:
    """Entries with an id above ``after_id``, oldest first."""
    query = select(audit_log).where(audit_log.c.id > after_id)
    if actor is not None:
        query = query.where(audit_log.c.actor == actor)
    return [{**row, "object": loads(row["object"], {})}
            for row in db.rows(query.order_by(audit_log.c.id).limit(limit))]
