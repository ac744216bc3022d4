"""The store's guarantees on both engines: migrate once under a lock, atomic "next version", after-commit hooks.

Two :class:`Database` objects on one database stand for two server
processes (each has its own connections; PostgreSQL's advisory locks and
SQLite's write lock are per connection, not per object).
"""

from __future__ import annotations

import threading

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import func, insert, select

from fleet_server.store import Database, models as model_store
from fleet_server.store.migrate import alembic_config
from fleet_server.store.schema import audit_log


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request, tmp_path) -> str:
    """A database with no tables yet, on each engine."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fleet.db'}"
    return request.getfixturevalue("database_url")


def _together(count: int, work) -> list:
    """Run ``work(i)`` on ``count`` threads released at once; their results (an exception is re-raised)."""
    barrier, results, errors = threading.Barrier(count), [None] * count, []

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work(i)
        except Exception as exc:  # noqa: BLE001 - handed to the test thread
            errors.append(exc)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def test_servers_opening_a_new_database_together_migrate_it_once(empty_url):
    databases = _together(3, lambda _: Database(empty_url))
    try:
        (head,) = ScriptDirectory.from_config(alembic_config()).get_heads()
        with databases[0].read() as conn:
            assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").all() == [(head,)]
    finally:
        for db in databases:
            db.close()


def test_two_servers_registering_one_name_at_once_get_distinct_consecutive_versions(empty_url):
    servers = [Database(empty_url), Database(empty_url)]
    try:
        def register(i: int) -> int:
            return model_store.insert_version(db=servers[i % 2], name="iris", runtime="onnx", sha256=f"{i:064x}",
                                              size=1, inputs=[], outputs=[], tags={}, properties={},
                                              created="2026-01-01T00:00:00Z")["version"]
        assert sorted(_together(8, register)) == list(range(1, 9))
    finally:
        for db in servers:
            db.close()


def test_after_commit_callbacks_run_once_the_outer_transaction_commits_and_never_after_a_rollback(empty_url):
    db, ran = Database(empty_url), []
    row = {"ts": "t", "actor": "a", "action": "POST", "target": "/x", "status": 201, "object": "{}"}
    try:
        with db.transaction() as outer:
            with db.transaction() as inner:
                assert inner is outer  # a nested call joins the outer transaction
                inner.execute(insert(audit_log).values(row))
                db.after_commit(lambda: ran.append("committed"))
            assert ran == []
        assert ran == ["committed"]
        with pytest.raises(RuntimeError, match="undo"):
            with db.transaction() as conn:
                conn.execute(insert(audit_log).values(row))
                db.after_commit(lambda: ran.append("rolled back"))
                raise RuntimeError("undo")
        assert ran == ["committed"]
        assert db.scalar(select(func.count()).select_from(audit_log)) == 1
    finally:
        db.close()
