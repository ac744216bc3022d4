"""Schema migrations: a data dir from the release before Alembic upgrades in place; the revisions and schema.py agree."""

from __future__ import annotations

import sqlite3

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from fleet_server.store import Database, deployments as deployment_store, devices as device_store
from fleet_server.store import models as model_store
from fleet_server.store.migrate import alembic_config
from fleet_server.store.schema import metadata
from tests.server.legacy_schema import LEGACY_SCHEMA_23CAD80

# What the release's data dirs from before some columns existed looked like (its _add_missing_columns added them).
_WITHOUT_ADDED_COLUMNS = (
    ("    created TEXT NOT NULL,\n    revoked TEXT\n);", "    created TEXT NOT NULL\n);"),
    ("    priority INTEGER NOT NULL DEFAULT 0,\n    admitted TEXT,\n    withdrawn INTEGER NOT NULL DEFAULT 0,\n"
     "    split TEXT,\n    fit TEXT,\n    decided TEXT\n", ""),
    ("    created TEXT NOT NULL,\n    priority", "    created TEXT NOT NULL\n    priority"),
)


def _legacy_data_dir(data_dir, *, without_added_columns: bool) -> None:
    """A fleet.db as the release made it, holding one model version, one bundle, one device and one deployment."""
    schema = LEGACY_SCHEMA_23CAD80
    if without_added_columns:
        for old, new in _WITHOUT_ADDED_COLUMNS[:2]:
            assert old in schema
            schema = schema.replace(old, new)
        schema = schema.replace("    created TEXT NOT NULL,\n);", "    created TEXT NOT NULL\n);")
    data_dir.mkdir()
    with sqlite3.connect(data_dir / "fleet.db") as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript(schema)
        conn.execute("INSERT INTO model_versions VALUES ('iris', 1, 'onnx', ?, 10, '[]', '[]', '{\"team\":\"a\"}', "
                     "'{}', '2026-01-01T00:00:00Z')", ["ab" * 32])
        conn.execute("INSERT INTO bundles VALUES ('d1', 'iris', 1, 'iris', 1, 10, '{}', '2026-01-01T00:00:00Z')")
        conn.execute("INSERT INTO devices (id, name, tags, created) VALUES ('cam-1', 'cam', '{\"site\":\"lab\"}', "
                     "'2026-01-01T00:00:00Z')")
        conn.execute("INSERT INTO deployments (module, version, bundle_digest, devices, created) "
                     "VALUES ('iris', 1, 'd1', '[\"cam-1\"]', '2026-01-01T00:00:00Z')")
        conn.execute("INSERT INTO audit_log (ts, actor, action, target, status) "
                     "VALUES ('2026-01-01T00:00:00Z', 'admin', 'POST', '/api/devices', 201)")


@pytest.mark.parametrize("without_added_columns", [False, True], ids=["current-release", "older-data-dir"])
def test_a_data_dir_from_the_release_before_alembic_upgrades_in_place_and_keeps_its_rows(tmp_path,
                                                                                         without_added_columns):
    _legacy_data_dir(tmp_path / "data", without_added_columns=without_added_columns)
    db = Database.for_data_dir(tmp_path / "data")
    try:
        assert model_store.get_version(db=db, name="iris", version=1)["tags"] == {"team": "a"}
        assert device_store.get_device(db=db, device_id="cam-1")["tags"] == {"site": "lab"}
        assert device_store.get_device(db=db, device_id="cam-1")["revoked"] is None
        deployment = deployment_store.get_deployment(db=db, deployment_id=1)
        assert (deployment["module"], deployment["target"]["devices"], deployment["priority"],
                deployment["withdrawn"]) == ("iris", ["cam-1"], 0, False)
        assert model_store.insert_version(db=db, name="iris", runtime="onnx", sha256="cd" * 32, size=1, inputs=[],
                                          outputs=[], tags={}, properties={}, created="2026-01-02T00:00:00Z"
                                          )["version"] == 2
        with db.read() as conn:
            assert MigrationContext.configure(conn).get_current_revision() == _head()
            # every table, column and index of schema.py (SQLite's old nullability quirks stay: no table rebuild)
            assert [d for d in compare_metadata(MigrationContext.configure(conn), metadata)
                    if isinstance(d, tuple) and d[0].split("_")[0] in ("add", "remove")] == []
    finally:
        db.close()
    with sqlite3.connect(tmp_path / "data" / "fleet.db") as conn, pytest.raises(sqlite3.DatabaseError,
                                                                               match="append-only"):
        conn.execute("DELETE FROM audit_log")


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_a_new_database_gets_exactly_the_schema_of_schema_py(tmp_path, engine, request):
    db = Database.for_data_dir(tmp_path) if engine == "sqlite" else Database(request.getfixturevalue("database_url"))
    try:
        with db.read() as conn:
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    finally:
        db.close()


def test_the_migrations_have_exactly_one_head():
    assert len(ScriptDirectory.from_config(alembic_config()).get_heads()) == 1


def _head() -> str:
    (head,) = ScriptDirectory.from_config(alembic_config()).get_heads()
    return head
