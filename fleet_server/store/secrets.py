"""Sealed server secrets (key ring, CA, CRL state) as versioned rows, for replicas sharing one database.

Each row holds bytes already sealed by :mod:`fleet_server.secret_box` and the
id of the key that sealed them; nothing here encrypts, decrypts or parses.
A row is created once (:func:`insert_secret`: insert-if-absent, so of several
replicas starting at once exactly one creates it) and replaced only by a
compare-and-swap on its version (:func:`replace_secret`), so two replicas
changing it at once never lose one change silently: the second is told.
"""

from __future__ import annotations

from sqlalchemy import select, update

from .db import Database
from .schema import server_secrets


def insert_secret(*, db: Database, name: str, key_id: str, sealed: bytes, updated: str) -> bool:
    """Store ``name`` at version 1 unless it exists; True when this call created it."""
    with db.transaction() as conn:
        return conn.execute(db.insert_ignoring(server_secrets).values(
            name=name, version=1, key_id=key_id, sealed=sealed, updated=updated)).rowcount == 1


def get_secret(*, db: Database, name: str) -> dict | None:
    """``{name, version, key_id, sealed}``, or None when there is no such row."""
    row = db.row(select(server_secrets.c.name, server_secrets.c.version, server_secrets.c.key_id,
                        server_secrets.c.sealed).where(server_secrets.c.name == name))
    if row is not None:
        row["sealed"] = bytes(row["sealed"])
    return row


def secret_version(*, db: Database, name: str) -> int | None:
    """The row's version alone (one primary-key read: how a replica notices another's change)."""
    return db.scalar(select(server_secrets.c.version).where(server_secrets.c.name == name))


def replace_secret(*, db: Database, name: str, version: int, key_id: str, sealed: bytes, updated: str) -> bool:
    """Replace the row if it is still at ``version`` (it becomes ``version + 1``); False when another writer
    changed it first (nothing is written then)."""
    with db.transaction() as conn:
        return conn.execute(update(server_secrets)
                            .where((server_secrets.c.name == name) & (server_secrets.c.version == version))
                            .values(version=version + 1, key_id=key_id, sealed=sealed, updated=updated)).rowcount == 1
