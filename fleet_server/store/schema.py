"""The server's tables as SQLAlchemy Core ``Table`` objects on one :data:`metadata` (both engines).

This is the schema the store modules query; the database gets it through the
Alembic revisions in ``migrations/versions/`` (never ``metadata.create_all``),
so a change here always comes with a new revision. JSON columns are text
(decoded by the store modules); timestamps are ISO-8601 text. The append-only
triggers of ``audit_log`` and ``rollout_events`` live in the revisions, not here.
A new feature's tables are appended at the end under a comment naming it.
"""

from __future__ import annotations

from sqlalchemy import (BigInteger, Column, DateTime, ForeignKey, Index, Integer, LargeBinary, MetaData,
                        PrimaryKeyConstraint, Table, Text, UniqueConstraint, text)

metadata = MetaData()
# Device-made counters and byte sizes: 64-bit on PostgreSQL (SQLite integers are 64-bit already).
Big = BigInteger().with_variant(Integer(), "sqlite")


def _autoincrement_id() -> Column:
    return Column("id", Integer, primary_key=True, autoincrement=True)


api_tokens = Table(
    "api_tokens", metadata,
    Column("token_hash", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("role", Text, nullable=False),
    Column("created", Text, nullable=False),
    Index("api_tokens_name", "name", unique=True),
)

audit_log = Table(
    "audit_log", metadata,
    _autoincrement_id(),
    Column("ts", Text, nullable=False),
    Column("actor", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("target", Text, nullable=False),
    Column("status", Integer, nullable=False),
    Column("object", Text),
    sqlite_autoincrement=True,
)

enrollments = Table(
    "enrollments", metadata,
    Column("token_hash", Text, primary_key=True),
    Column("device_id", Text, nullable=False),
    Column("tags", Text, nullable=False),
    Column("created", Text, nullable=False),
    Column("expires", Text, nullable=False),
    Column("used", Text),
)

device_certificates = Table(
    "device_certificates", metadata,
    Column("serial", Text, primary_key=True),
    Column("device_id", Text, nullable=False),
    Column("not_after", Text, nullable=False),
    Column("issued", Text, nullable=False),
    Column("revoked", Text),
    Column("public_key", Text),
    Index("device_certificates_device", "device_id"),
)

model_versions = Table(
    "model_versions", metadata,
    Column("name", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("runtime", Text, nullable=False),
    Column("sha256", Text, nullable=False),
    Column("size", Big, nullable=False),
    Column("inputs", Text, nullable=False),
    Column("outputs", Text, nullable=False),
    Column("tags", Text, nullable=False),
    Column("properties", Text, nullable=False),
    Column("created", Text, nullable=False),
    PrimaryKeyConstraint("name", "version"),
    Index("model_versions_sha256", "sha256"),
)

bundles = Table(
    "bundles", metadata,
    Column("digest", Text, primary_key=True),
    Column("module", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("model_name", Text),
    Column("model_version", Integer),
    Column("size", Big, nullable=False),
    Column("envelope", Text, nullable=False),
    Column("created", Text, nullable=False),
    UniqueConstraint("module", "version"),
    Index("bundles_model", "model_name", "model_version"),
)

devices = Table(
    "devices", metadata,
    Column("id", Text, primary_key=True),
    Column("name", Text),
    Column("tags", Text, nullable=False, server_default=text("'{}'")),
    Column("profile", Text, nullable=False, server_default=text("''")),
    Column("status", Text, nullable=False, server_default=text("'unknown'")),
    Column("last_seen", Text),
    Column("agent_version", Text, nullable=False, server_default=text("''")),
    Column("scoring_url", Text),
    Column("reported", Text),
    Column("desired_generation", Integer, nullable=False, server_default=text("0")),
    Column("desired_key", Text),
    Column("desired_envelope", Text),
    Column("created", Text, nullable=False),
    Column("revoked", Text),
)

deployments = Table(
    "deployments", metadata,
    _autoincrement_id(),
    Column("module", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("bundle_digest", Text, ForeignKey("bundles.digest"), nullable=False),
    Column("devices", Text),
    Column("selector", Text),
    Column("created", Text, nullable=False),
    Column("priority", Integer, nullable=False, server_default=text("0")),
    Column("admitted", Text),
    Column("withdrawn", Integer, nullable=False, server_default=text("0")),
    Column("split", Text),
    Column("fit", Text),
    Column("decided", Text),
    Index("deployments_bundle", "bundle_digest"),
    sqlite_autoincrement=True,
)

rollouts = Table(
    "rollouts", metadata,
    _autoincrement_id(),
    Column("deployment_id", Integer, ForeignKey("deployments.id"), nullable=False, unique=True),
    Column("plan", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("waves", Text, nullable=False, server_default=text("'[]'")),
    Column("wave_started", Text),
    Column("acknowledged_failures", Integer, nullable=False, server_default=text("0")),
    Column("reason", Text),
    Column("created", Text, nullable=False),
    Column("updated", Text, nullable=False),
    sqlite_autoincrement=True,
)

rollout_events = Table(
    "rollout_events", metadata,
    _autoincrement_id(),
    Column("rollout_id", Integer, ForeignKey("rollouts.id"), nullable=False),
    Column("ts", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("actor", Text, nullable=False),
    Column("detail", Text, nullable=False),
    sqlite_autoincrement=True,
)

bundle_transfers = Table(
    "bundle_transfers", metadata,
    Column("bundle_digest", Text, nullable=False),
    Column("device_id", Text, nullable=False),
    Column("chunk", Text, nullable=False),
    Column("size", Big, nullable=False),
    PrimaryKeyConstraint("bundle_digest", "device_id", "chunk"),
)

device_groups = Table(
    "device_groups", metadata,
    Column("name", Text, primary_key=True),
    Column("devices", Text),
    Column("selector", Text),
    Column("created", Text, nullable=False),
)

telemetry = Table(
    "telemetry", metadata,
    Column("device_id", Text, nullable=False),
    Column("outbox_id", Text, nullable=False),
    Column("seq", Big, nullable=False),
    Column("ts", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("data", Text, nullable=False),
    Column("received", Text, nullable=False),
    Column("rolled", Integer, nullable=False, server_default=text("0")),  # 1 once in the rollups (retention.py)
    PrimaryKeyConstraint("device_id", "outbox_id", "seq"),
    Index("telemetry_received", "received"),
    Index("telemetry_unrolled", "received", sqlite_where=text("rolled = 0"), postgresql_where=text("rolled = 0")),
    Index("telemetry_device_kind", "device_id", "kind", "received"),
)

captures = Table(
    "captures", metadata,
    _autoincrement_id(),
    Column("device_id", Text, nullable=False),
    Column("outbox_id", Text, nullable=False),
    Column("seq", Big, nullable=False),
    Column("ts", Text, nullable=False),
    Column("model", Text, nullable=False),
    Column("version", Integer),
    Column("scored_on", Text, nullable=False),
    Column("reason", Text),
    Column("size", Big, nullable=False),
    Column("data", Text, nullable=False),
    Column("received", Text, nullable=False),
    UniqueConstraint("device_id", "outbox_id", "seq"),
    Index("captures_model", "model", "version", "id"),
    Index("captures_received", "received"),  # retention finds old rows by it
    sqlite_autoincrement=True,
)

feedback = Table(
    "feedback", metadata,
    _autoincrement_id(),
    Column("source", Text, nullable=False),
    Column("model", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("request_id", Text, nullable=False),
    Column("scored_on", Text, nullable=False),
    Column("split", Integer, nullable=False),
    Column("pairs", Text, nullable=False),
    Column("received", Text, nullable=False),
    UniqueConstraint("source", "model", "request_id"),
    Index("feedback_model", "model", "version"),
    sqlite_autoincrement=True,
)

drift_references = Table(
    "drift_references", metadata,
    Column("model", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("reference_id", Text, nullable=False),
    Column("reference", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("created", Text, nullable=False),
    PrimaryKeyConstraint("model", "version"),
)

drift_windows = Table(
    "drift_windows", metadata,
    Column("device_id", Text, nullable=False),
    Column("outbox_id", Text, nullable=False),
    Column("seq", Big, nullable=False),
    Column("ts", Text, nullable=False),
    Column("model", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("rows", Integer, nullable=False),
    Column("counts", Text, nullable=False),
    Column("received", Text, nullable=False),
    PrimaryKeyConstraint("device_id", "outbox_id", "seq"),
    Index("drift_windows_version", "model", "version", "ts"),
    Index("drift_windows_received", "received"),  # retention finds old rows by it
)

drift_alerts = Table(
    "drift_alerts", metadata,
    _autoincrement_id(),
    Column("model", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("device_id", Text, nullable=False),
    Column("feature", Text, nullable=False),
    Column("raised", Text, nullable=False),
    Column("cleared", Text),
    Column("statistics", Text, nullable=False),
    Index("drift_alerts_version", "model", "version", "device_id", "feature"),
    sqlite_autoincrement=True,
)

jobs = Table(
    "jobs", metadata,
    _autoincrement_id(),
    Column("wire_id", Text, nullable=False, unique=True),
    Column("kind", Text, nullable=False),
    Column("params", Text, nullable=False),
    Column("target", Text, nullable=False),
    Column("plan", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("reason", Text),
    Column("created_by", Text),
    Column("created", Text, nullable=False),
    Column("updated", Text, nullable=False),
    sqlite_autoincrement=True,
)

job_devices = Table(
    "job_devices", metadata,
    Column("job_id", Integer, ForeignKey("jobs.id"), nullable=False),
    Column("device_id", Text, nullable=False),
    Column("position", Integer, nullable=False),
    Column("state", Text, nullable=False),
    Column("envelope", Text),
    Column("sent", Text),
    Column("expires", Text),
    Column("finished", Text),
    Column("answers", Integer, nullable=False, server_default=text("0")),
    Column("result", Text),
    Column("error", Text),
    PrimaryKeyConstraint("job_id", "device_id"),
)

job_answers = Table(
    "job_answers", metadata,
    Column("job_id", Integer, nullable=False),
    Column("device_id", Text, nullable=False),
    Column("outbox_id", Text, nullable=False),
    Column("seq", Big, nullable=False),
    PrimaryKeyConstraint("job_id", "device_id", "outbox_id", "seq"),
)

bundle_keys = Table(
    "bundle_keys", metadata,
    Column("digest", Text, primary_key=True),
    Column("key", Text, nullable=False),
    Column("created", Text, nullable=False),
)

# Shared state for replicas (issue 14, "shared"): model files and chunks as rows (fleet_server/store/blob_rows.py),
# and the key ring, CA and CRL sealed under the server's secret key (fleet_server/store/secrets.py).
blob_objects = Table(
    "blob_objects", metadata,
    Column("store", Text, nullable=False),  # "blobs" (model files) or "chunks" (bundle chunks)
    Column("sha256", Text, nullable=False),
    Column("size", Big, nullable=False),
    Column("pieces", Integer, nullable=False),
    Column("created", Text, nullable=False),
    PrimaryKeyConstraint("store", "sha256"),
)

blob_pieces = Table(
    "blob_pieces", metadata,
    Column("store", Text, nullable=False),
    Column("sha256", Text, nullable=False),
    Column("seq", Integer, nullable=False),
    Column("data", LargeBinary, nullable=False),
    PrimaryKeyConstraint("store", "sha256", "seq"),
)

server_secrets = Table(
    "server_secrets", metadata,
    Column("name", Text, primary_key=True),
    Column("version", Integer, nullable=False),
    Column("key_id", Text, nullable=False),  # which secret key sealed it (a keyed hash, not the key)
    Column("sealed", LargeBinary, nullable=False),  # AES-256-GCM: nonce, ciphertext, tag
    Column("updated", Text, nullable=False),
)

# --- telemetry rollups and retention (fleet_server/telemetry_rollup.py says what each column adds up) --------------
def _rollup_table(name: str) -> Table:
    """One row per device, model version and bucket start (minute or hour): what its raw telemetry added up to."""
    return Table(
        name, metadata,
        Column("device_id", Text, nullable=False),
        Column("model", Text, nullable=False),  # "" for the device's own row (heartbeats, events)
        Column("version", Integer, nullable=False),  # 0 where the records name none (fallback counts)
        Column("bucket", Text, nullable=False),  # the bucket's start, YYYY-MM-DDTHH:MM:00Z
        *(Column(c, Big, nullable=False, server_default=text("0")) for c in
          ("records", "requests", "errors", "fallbacks", "heartbeats", "events", "cpu_percent_sum")),
        *(Column(c, Big) for c in ("cpu_percent_max", "rss_bytes_max", "memory_percent_max", "disk_free_bytes_min")),
        Column("latency_bins", Text),  # merged latency sketch (fleet_server/telemetry_rollup.py)
        PrimaryKeyConstraint("device_id", "model", "version", "bucket"),
        Index(f"{name}_bucket", "bucket"),
    )


telemetry_minute = _rollup_table("telemetry_minute")
telemetry_hour = _rollup_table("telemetry_hour")

# Leadership among server replicas on PostgreSQL (fleet_server/leadership.py): one row per lease; its expiry is a
# real timestamp, compared with the database's clock (never written on SQLite)
leases = Table(
    "leases", metadata,
    Column("name", Text, primary_key=True),
    Column("holder", Text, nullable=False),
    Column("epoch", Big, nullable=False),
    Column("expires", DateTime(timezone=True), nullable=False),
)
