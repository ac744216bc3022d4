"""The ``leases`` table (PostgreSQL replicas only): a lease row locked, read with the database's clock, rewritten.

:func:`lock` runs inside the caller's :meth:`~.db.Database.transaction`: it
first bounds how long that transaction may stall (``statement_timeout``,
``idle_in_transaction_session_timeout`` and ``lock_timeout``, all
transaction-local), then reads the row ``FOR UPDATE`` together with
``clock_timestamp()``. The rules of who may hold a lease are not here
(:mod:`fleet_server.leadership`); nor is anything on SQLite, where one server
leads by construction and this table stays empty.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import func, select, update

from .db import Database
from .schema import leases

NEVER = datetime(1970, 1, 1, tzinfo=timezone.utc)  # the expiry of a lease nobody has held yet


def ensure(*, db: Database, name: str) -> None:
    """Create the lease row (held by nobody, expired) unless it exists."""
    db.insert_new(leases, [{"name": name, "holder": "", "epoch": 0, "expires": NEVER}])


def lock(*, db: Database, name: str, timeout_s: float) -> dict:
    """In this thread's open transaction: bound its stalls to ``timeout_s``, lock the row; ``{"holder", "epoch",
    "expires", "now"}`` (``now``: the database's clock once the lock is held)."""
    limit = f"{max(1, round(timeout_s * 1000))}ms"
    with db.transaction() as conn:
        conn.execute(select(*(func.set_config(setting, limit, True) for setting in (
            "statement_timeout", "idle_in_transaction_session_timeout", "lock_timeout"))))
        row = conn.execute(select(leases.c.holder, leases.c.epoch, leases.c.expires,
                                  func.clock_timestamp().label("now"))
                           .where(leases.c.name == name).with_for_update()).mappings().one()
    return dict(row)


def save(*, db: Database, name: str, holder: str, epoch: int, expires: datetime) -> None:
    """Rewrite the row (locked by :func:`lock` in the same transaction)."""
    with db.transaction() as conn:
        conn.execute(update(leases).where(leases.c.name == name).values(holder=holder, epoch=epoch, expires=expires))


def read(*, db: Database, name: str) -> dict | None:
    """The row as it is now, unlocked (for tests and operators); None before any replica asked."""
    return db.row(select(leases.c.holder, leases.c.epoch, leases.c.expires).where(leases.c.name == name))
