"""The server's database on SQLAlchemy Core: SQLite (the embedded default) or PostgreSQL, one code path.

:class:`Database` opens the engine, brings the schema to the newest Alembic
revision (:mod:`.migrate`, under a lock, so replicas starting together
migrate once) and hands out connections:

- :meth:`Database.transaction`: one write transaction; nested calls on the
  same thread join the outer one, and :meth:`Database.after_commit` callbacks
  run once the outermost one commits. On SQLite every write transaction holds
  one process-wide lock and ``BEGIN IMMEDIATE``, so the paho callback thread
  and FastAPI's worker threads never interleave half-done writes and a
  read-then-write ("next version") is atomic. On PostgreSQL transactions run
  side by side (READ COMMITTED): a read-then-write takes :meth:`Database.lock`
  (a transaction-scoped advisory lock) or a row lock first.
- :meth:`Database.read`: a connection for reads (this thread's open
  transaction if there is one; otherwise autocommit, as SQLite reads were).

Where the engines' SQL differs, the one construct that compiles on both is
chosen here (:meth:`Database.insert_ignoring`, :meth:`Database.upsert`,
:meth:`Database.lock`); store modules never branch on the engine. JSON
columns are text, decoded by the store modules, never here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from sqlalchemy import Connection, Table, create_engine, event, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.sql.dml import Insert

from . import migrate
from .schema import metadata

SQLITE_BUSY_TIMEOUT_S = 30.0
POSTGRES_POOL_SIZE = 10
POSTGRES_POOL_OVERFLOW = 20


def engine_url(url: str) -> str:
    """``url`` with the driver this package uses: psycopg 3 for ``postgresql://`` (``postgres://`` too)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ValueError(f"unsupported database URL {parsed.render_as_string(hide_password=True)!r}: "
                         "use postgresql://USER@HOST:PORT/DB (or sqlite:///PATH)")
    return parsed.render_as_string(hide_password=False)


class Database:
    """The fleet's database, shared safely by every thread of the process (and, on PostgreSQL, by replicas)."""

    def __init__(self, url: str):
        self.url = engine_url(url)
        self.dialect = make_url(self.url).get_backend_name()
        self.display_url = make_url(self.url).render_as_string(hide_password=True)
        self._local = threading.local()
        if self.dialect == "sqlite":
            self.engine = create_engine(self.url, pool_size=8, max_overflow=-1,
                                        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False})
            event.listen(self.engine, "connect", _sqlite_on_connect)
            self._write_lock = threading.RLock()
            self._reader = self.engine
        else:
            self.engine = create_engine(self.url, pool_size=POSTGRES_POOL_SIZE, max_overflow=POSTGRES_POOL_OVERFLOW)
            self._write_lock = nullcontext()
            self._reader = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        migrate.upgrade(self.engine)

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> "Database":
        """The embedded default: ``<data_dir>/fleet.db``."""
        return cls(f"sqlite:///{Path(data_dir) / 'fleet.db'}")

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One write transaction; nested calls on the same thread join the outer one."""
        outer = getattr(self._local, "tx", None)
        if outer is not None:
            yield outer
            return
        with self._write_lock, self.engine.connect() as conn:
            if self.dialect == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            self._local.tx, self._local.callbacks = conn, []
            try:
                yield conn
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
            else:
                callbacks = self._local.callbacks
            finally:
                self._local.tx, self._local.callbacks = None, []
        for callback in callbacks:
            callback()

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reads: this thread's open transaction if any, else a pooled autocommit one."""
        outer = getattr(self._local, "tx", None)
        if outer is not None:
            yield outer
            return
        with self._reader.connect() as conn:
            yield conn

    def rows(self, statement) -> list[dict]:
        """Every row of a query, as dicts."""
        with self.read() as conn:
            return [dict(row) for row in conn.execute(statement).mappings()]

    def row(self, statement) -> dict | None:
        """The first row of a query as a dict, or None."""
        with self.read() as conn:
            found = conn.execute(statement).mappings().first()
        return None if found is None else dict(found)

    def scalar(self, statement):
        """The first column of the first row of a query (None when there is none)."""
        with self.read() as conn:
            return conn.execute(statement).scalar()

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once this thread's outermost transaction commits (never when it rolls back)."""
        if getattr(self._local, "tx", None) is None:
            raise RuntimeError("after_commit() outside a transaction")
        self._local.callbacks.append(callback)

    def insert_ignoring(self, table: Table) -> Insert:
        """``INSERT`` that skips rows whose primary or unique key is already stored (its ``rowcount``: 1 when the
        row was new, 0 when skipped)."""
        return self._insert(table).on_conflict_do_nothing().execution_options(preserve_rowcount=True)

    def upsert(self, table: Table, keys: tuple[str, ...]) -> Insert:
        """``INSERT`` that replaces the other columns of a row whose ``keys`` are already stored."""
        statement = self._insert(table)
        return statement.on_conflict_do_update(
            index_elements=list(keys),
            set_={c.name: statement.excluded[c.name] for c in table.columns if c.name not in keys})

    def _insert(self, table: Table):
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)

    def insert_new(self, table: Table | str, rows: list[dict]) -> int:
        """Insert ``rows`` in one transaction, skipping any whose key is already stored (redelivered telemetry,
        captures, drift windows, labels); return how many were new."""
        if not rows:
            return 0
        table = metadata.tables[table] if isinstance(table, str) else table
        with self.transaction() as conn:  # one executemany; its rowcount sums the rows (sqlite3 and psycopg 3)
            return conn.execute(self.insert_ignoring(table), rows).rowcount

    def lock(self, conn: Connection, *key: object) -> None:
        """Serialise read-then-write sequences on ``key`` (e.g. ``"model_versions", name``) until the transaction
        ends: an advisory lock on PostgreSQL; nothing on SQLite, whose write transactions are serial already."""
        if self.dialect == "postgresql":
            conn.execute(select(func.pg_advisory_xact_lock(func.hashtextextended("\x1f".join(map(str, key)), 0))))

    def ping(self) -> None:
        """Raise (a ``sqlalchemy.exc.OperationalError``) when the database cannot be reached."""
        with self._reader.connect() as conn:
            conn.execute(select(1)).one()

    def close(self) -> None:
        self.engine.dispose()


def _sqlite_on_connect(dbapi_conn, _record) -> None:
    dbapi_conn.isolation_level = None  # no implicit BEGIN: transaction() says BEGIN IMMEDIATE itself
    dbapi_conn.execute("PRAGMA foreign_keys = ON")
    dbapi_conn.execute("PRAGMA synchronous = NORMAL")
