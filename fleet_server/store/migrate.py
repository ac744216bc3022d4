"""Bring a database to the newest Alembic revision at open, once, under a lock.

The revisions live in ``migrations/versions/`` (package data; no
``alembic.ini`` is needed: :func:`alembic_config` builds the configuration).
The lock makes several processes opening the same database at once migrate
it once: on PostgreSQL a session advisory lock, on SQLite the database's
write lock (``BEGIN IMMEDIATE``), held through the whole upgrade, which runs
in that one transaction. A SQLite data dir made before Alembic (tables, no
``alembic_version``) is upgraded in place by revision 0001 itself. Not here:
the schema (:mod:`.schema`) and the connections (:mod:`.db`).
"""

from __future__ import annotations

import logging
from pathlib import Path

logging.getLogger("alembic").setLevel(logging.WARNING)  # its chatter (at import too); _apply logs what changed

from alembic import command  # noqa: E402 - after quieting its logger
from alembic.config import Config  # noqa: E402
from alembic.migration import MigrationContext  # noqa: E402
from sqlalchemy import Connection, Engine, func, inspect, select  # noqa: E402

MIGRATIONS = Path(__file__).with_name("migrations")
_LOCK_KEY = "edgefleet schema migration"
_log = logging.getLogger(__name__)


def alembic_config(connection=None) -> Config:
    """Alembic's configuration for this package's scripts; ``connection``: run on it (``env.py`` uses it)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def upgrade(engine: Engine) -> None:
    """Apply every revision the database lacks (nothing when it is at the head)."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("PRAGMA journal_mode = WAL")  # persistent; must run outside a transaction
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            _apply(conn)
            conn.commit()
            return
        key = func.hashtextextended(_LOCK_KEY, 0)
        conn.execute(select(func.pg_advisory_lock(key)))
        conn.commit()
        try:
            _apply(conn)
            conn.commit()
        finally:
            conn.rollback()
            conn.execute(select(func.pg_advisory_unlock(key)))
            conn.commit()


def _apply(conn: Connection) -> None:
    before = MigrationContext.configure(conn).get_current_revision()
    existing = before is not None or bool(inspect(conn).get_table_names())
    command.upgrade(alembic_config(conn), "head")
    after = MigrationContext.configure(conn).get_current_revision()
    if existing and after != before:  # a new database is created silently, as before Alembic
        _log.info("database schema upgraded from revision %s to %s", before or "(before Alembic)", after)
