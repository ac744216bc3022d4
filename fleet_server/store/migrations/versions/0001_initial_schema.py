"""The schema of the last release before Alembic (fleet.db's SCHEMA text), on both engines.

Revision ID: 0001
Revises: -
A fresh database gets every table, index and append-only trigger. A SQLite
data dir made before Alembic (tables present, no ``alembic_version``) is
upgraded in place: tables it lacks are created, the columns added over that
release's life (what its ``_add_missing_columns`` added at each start) are
added, and missing indexes and triggers are created; nothing is dropped.
"""

from alembic import op
import sqlalchemy as sa

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BIG = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_T, _I = sa.Text(), sa.Integer()


def _id() -> sa.Column:
    return sa.Column("id", sa.Integer(), autoincrement=True, nullable=False, primary_key=True)


def _c(name, type_, nullable=True, default=None) -> sa.Column:
    return sa.Column(name, type_, nullable=nullable, server_default=None if default is None else sa.text(default))


def _tables() -> dict:
    """name -> (columns and constraints, table options), new objects each call; the order respects foreign keys."""
    return {
    "api_tokens": ([_c("token_hash", _T, False), _c("name", _T, False), _c("role", _T, False),
                    _c("created", _T, False), sa.PrimaryKeyConstraint("token_hash")], {}),
    "audit_log": ([_id(), _c("ts", _T, False), _c("actor", _T, False), _c("action", _T, False),
                   _c("target", _T, False), _c("status", _I, False), _c("object", _T)], {"sqlite_autoincrement": True}),
    "enrollments": ([_c("token_hash", _T, False), _c("device_id", _T, False), _c("tags", _T, False),
                     _c("created", _T, False), _c("expires", _T, False), _c("used", _T),
                     sa.PrimaryKeyConstraint("token_hash")], {}),
    "device_certificates": ([_c("serial", _T, False), _c("device_id", _T, False), _c("not_after", _T, False),
                             _c("issued", _T, False), _c("revoked", _T), _c("public_key", _T),
                             sa.PrimaryKeyConstraint("serial")], {}),
    "model_versions": ([_c("name", _T, False), _c("version", _I, False), _c("runtime", _T, False),
                        _c("sha256", _T, False), _c("size", BIG, False), _c("inputs", _T, False),
                        _c("outputs", _T, False), _c("tags", _T, False), _c("properties", _T, False),
                        _c("created", _T, False), sa.PrimaryKeyConstraint("name", "version")], {}),
    "bundles": ([_c("digest", _T, False), _c("module", _T, False), _c("version", _I, False), _c("model_name", _T),
                 _c("model_version", _I), _c("size", BIG, False), _c("envelope", _T, False), _c("created", _T, False),
                 sa.PrimaryKeyConstraint("digest"), sa.UniqueConstraint("module", "version")], {}),
    "devices": ([_c("id", _T, False), _c("name", _T), _c("tags", _T, False, "'{}'"),
                 _c("profile", _T, False, "''"), _c("status", _T, False, "'unknown'"), _c("last_seen", _T),
                 _c("agent_version", _T, False, "''"), _c("scoring_url", _T), _c("reported", _T),
                 _c("desired_generation", _I, False, "0"), _c("desired_key", _T), _c("desired_envelope", _T),
                 _c("created", _T, False), _c("revoked", _T), sa.PrimaryKeyConstraint("id")], {}),
    "deployments": ([_id(), _c("module", _T, False), _c("version", _I, False), _c("bundle_digest", _T, False),
                     _c("devices", _T), _c("selector", _T), _c("created", _T, False),
                     _c("priority", _I, False, "0"), _c("admitted", _T), _c("withdrawn", _I, False, "0"),
                     _c("split", _T), _c("fit", _T), _c("decided", _T),
                     sa.ForeignKeyConstraint(["bundle_digest"], ["bundles.digest"])], {"sqlite_autoincrement": True}),
    "rollouts": ([_id(), _c("deployment_id", _I, False), _c("plan", _T, False), _c("state", _T, False),
                  _c("waves", _T, False, "'[]'"), _c("wave_started", _T),
                  _c("acknowledged_failures", _I, False, "0"), _c("reason", _T), _c("created", _T, False),
                  _c("updated", _T, False), sa.UniqueConstraint("deployment_id"),
                  sa.ForeignKeyConstraint(["deployment_id"], ["deployments.id"])], {"sqlite_autoincrement": True}),
    "rollout_events": ([_id(), _c("rollout_id", _I, False), _c("ts", _T, False), _c("kind", _T, False),
                        _c("actor", _T, False), _c("detail", _T, False),
                        sa.ForeignKeyConstraint(["rollout_id"], ["rollouts.id"])], {"sqlite_autoincrement": True}),
    "bundle_transfers": ([_c("bundle_digest", _T, False), _c("device_id", _T, False), _c("chunk", _T, False),
                          _c("size", BIG, False), sa.PrimaryKeyConstraint("bundle_digest", "device_id", "chunk")], {}),
    "device_groups": ([_c("name", _T, False), _c("devices", _T), _c("selector", _T), _c("created", _T, False),
                       sa.PrimaryKeyConstraint("name")], {}),
    "telemetry": ([_c("device_id", _T, False), _c("outbox_id", _T, False), _c("seq", BIG, False),
                   _c("ts", _T, False), _c("kind", _T, False), _c("data", _T, False), _c("received", _T, False),
                   sa.PrimaryKeyConstraint("device_id", "outbox_id", "seq")], {}),
    "captures": ([_id(), _c("device_id", _T, False), _c("outbox_id", _T, False), _c("seq", BIG, False),
                  _c("ts", _T, False), _c("model", _T, False), _c("version", _I), _c("scored_on", _T, False),
                  _c("reason", _T), _c("size", BIG, False), _c("data", _T, False), _c("received", _T, False),
                  sa.UniqueConstraint("device_id", "outbox_id", "seq")], {"sqlite_autoincrement": True}),
    "feedback": ([_id(), _c("source", _T, False), _c("model", _T, False), _c("version", _I, False),
                  _c("request_id", _T, False), _c("scored_on", _T, False), _c("split", _I, False),
                  _c("pairs", _T, False), _c("received", _T, False),
                  sa.UniqueConstraint("source", "model", "request_id")], {"sqlite_autoincrement": True}),
    "drift_references": ([_c("model", _T, False), _c("version", _I, False), _c("reference_id", _T, False),
                          _c("reference", _T, False), _c("source", _T, False), _c("created", _T, False),
                          sa.PrimaryKeyConstraint("model", "version")], {}),
    "drift_windows": ([_c("device_id", _T, False), _c("outbox_id", _T, False), _c("seq", BIG, False),
                       _c("ts", _T, False), _c("model", _T, False), _c("version", _I, False), _c("rows", _I, False),
                       _c("counts", _T, False), _c("received", _T, False),
                       sa.PrimaryKeyConstraint("device_id", "outbox_id", "seq")], {}),
    "drift_alerts": ([_id(), _c("model", _T, False), _c("version", _I, False), _c("device_id", _T, False),
                      _c("feature", _T, False), _c("raised", _T, False), _c("cleared", _T),
                      _c("statistics", _T, False)], {"sqlite_autoincrement": True}),
    "jobs": ([_id(), _c("wire_id", _T, False), _c("kind", _T, False), _c("params", _T, False),
              _c("target", _T, False), _c("plan", _T, False), _c("state", _T, False), _c("reason", _T),
              _c("created_by", _T), _c("created", _T, False), _c("updated", _T, False),
              sa.UniqueConstraint("wire_id")], {"sqlite_autoincrement": True}),
    "job_devices": ([_c("job_id", _I, False), _c("device_id", _T, False), _c("position", _I, False),
                     _c("state", _T, False), _c("envelope", _T), _c("sent", _T), _c("expires", _T),
                     _c("finished", _T), _c("answers", _I, False, "0"), _c("result", _T), _c("error", _T),
                     sa.PrimaryKeyConstraint("job_id", "device_id"),
                     sa.ForeignKeyConstraint(["job_id"], ["jobs.id"])], {}),
    "job_answers": ([_c("job_id", _I, False), _c("device_id", _T, False), _c("outbox_id", _T, False),
                     _c("seq", BIG, False), sa.PrimaryKeyConstraint("job_id", "device_id", "outbox_id", "seq")], {}),
    "bundle_keys": ([_c("digest", _T, False), _c("key", _T, False), _c("created", _T, False),
                     sa.PrimaryKeyConstraint("digest")], {}),
}

# name -> (table, columns, unique)
INDEXES = {
    "api_tokens_name": ("api_tokens", ["name"], True),
    "device_certificates_device": ("device_certificates", ["device_id"], False),
    "model_versions_sha256": ("model_versions", ["sha256"], False),
    "bundles_model": ("bundles", ["model_name", "model_version"], False),
    "deployments_bundle": ("deployments", ["bundle_digest"], False),
    "telemetry_received": ("telemetry", ["received"], False),
    "telemetry_device_kind": ("telemetry", ["device_id", "kind", "received"], False),
    "captures_model": ("captures", ["model", "version", "id"], False),
    "feedback_model": ("feedback", ["model", "version"], False),
    "drift_windows_version": ("drift_windows", ["model", "version", "ts"], False),
    "drift_alerts_version": ("drift_alerts", ["model", "version", "device_id", "feature"], False),
}

# columns the pre-Alembic release added to older data dirs at start (its _ADDED_COLUMNS)
LEGACY_COLUMNS = {
    "devices": ["revoked"], "audit_log": ["object"], "device_certificates": ["public_key"], "captures": ["reason"],
    "deployments": ["priority", "admitted", "withdrawn", "split", "fit", "decided"],
}

APPEND_ONLY = {"audit_log": "the audit log is append-only", "rollout_events": "rollout history is append-only"}


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    existing = set(inspector.get_table_names())
    for name, (columns, options) in _tables().items():
        if name not in existing:
            op.create_table(name, *columns, **options)
            continue
        present = {c["name"] for c in inspector.get_columns(name)}
        for column in columns:
            if isinstance(column, sa.Column) and column.name in LEGACY_COLUMNS.get(name, ()) \
                    and column.name not in present:
                op.add_column(name, column)
    for name, (table, columns, unique) in INDEXES.items():
        op.create_index(name, table, columns, unique=unique, if_not_exists=True)
    for table, message in APPEND_ONLY.items():
        _append_only(bind.dialect.name, table, message)


def _append_only(dialect: str, table: str, message: str) -> None:
    """Refuse UPDATE and DELETE (and, on PostgreSQL, TRUNCATE) on ``table`` in the database itself."""
    if dialect == "sqlite":
        for verb in ("update", "delete"):
            op.execute(f"CREATE TRIGGER IF NOT EXISTS {table}_no_{verb} BEFORE {verb.upper()} ON {table} "
                       f"BEGIN SELECT RAISE(ABORT, '{message}'); END")
        return
    op.execute("CREATE OR REPLACE FUNCTION edgefleet_append_only() RETURNS trigger LANGUAGE plpgsql AS "
               "$$ BEGIN RAISE EXCEPTION '%', TG_ARGV[0] USING ERRCODE = 'restrict_violation'; END $$")
    for verb, scope in (("update", "ROW"), ("delete", "ROW"), ("truncate", "STATEMENT")):
        op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{verb} ON {table}")
        op.execute(f"CREATE TRIGGER {table}_no_{verb} BEFORE {verb.upper()} ON {table} FOR EACH {scope} "
                   f"EXECUTE FUNCTION edgefleet_append_only('{message}')")


def downgrade() -> None:
    raise NotImplementedError("the first schema has nothing to go back to")
