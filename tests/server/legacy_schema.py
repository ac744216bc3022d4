"""The SQLite schema of the last release before Alembic, frozen (fleet_server/store/db.py's SCHEMA at 23cad80).

Migration tests build a data dir with it, as that release made them; never
edit it to follow the current schema.
"""

LEGACY_SCHEMA_23CAD80 = """
CREATE TABLE IF NOT EXISTS api_tokens (
    token_hash TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS api_tokens_name ON api_tokens (name);
CREATE TABLE IF NOT EXISTS audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    status INTEGER NOT NULL,
    object TEXT
);
CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TABLE IF NOT EXISTS enrollments (
    token_hash TEXT PRIMARY KEY,
    device_id TEXT NOT NULL,
    tags TEXT NOT NULL,
    created TEXT NOT NULL,
    expires TEXT NOT NULL,
    used TEXT
);
CREATE TABLE IF NOT EXISTS device_certificates (
    serial TEXT PRIMARY KEY,
    device_id TEXT NOT NULL,
    not_after TEXT NOT NULL,
    issued TEXT NOT NULL,
    revoked TEXT,
    public_key TEXT
);
CREATE INDEX IF NOT EXISTS device_certificates_device ON device_certificates (device_id);
CREATE TABLE IF NOT EXISTS model_versions (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    runtime TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    inputs TEXT NOT NULL,
    outputs TEXT NOT NULL,
    tags TEXT NOT NULL,
    properties TEXT NOT NULL,
    created TEXT NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE INDEX IF NOT EXISTS model_versions_sha256 ON model_versions (sha256);
CREATE TABLE IF NOT EXISTS bundles (
    digest TEXT PRIMARY KEY,
    module TEXT NOT NULL,
    version INTEGER NOT NULL,
    model_name TEXT,
    model_version INTEGER,
    size INTEGER NOT NULL,
    envelope TEXT NOT NULL,
    created TEXT NOT NULL,
    UNIQUE (module, version)
);
CREATE INDEX IF NOT EXISTS bundles_model ON bundles (model_name, model_version);
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY,
    name TEXT,
    tags TEXT NOT NULL DEFAULT '{}',
    profile TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT 'unknown',
    last_seen TEXT,
    agent_version TEXT NOT NULL DEFAULT '',
    scoring_url TEXT,
    reported TEXT,
    desired_generation INTEGER NOT NULL DEFAULT 0,
    desired_key TEXT,
    desired_envelope TEXT,
    created TEXT NOT NULL,
    revoked TEXT
);
CREATE TABLE IF NOT EXISTS deployments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    module TEXT NOT NULL,
    version INTEGER NOT NULL,
    bundle_digest TEXT NOT NULL REFERENCES bundles (digest),
    devices TEXT,
    selector TEXT,
    created TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    admitted TEXT,
    withdrawn INTEGER NOT NULL DEFAULT 0,
    split TEXT,
    fit TEXT,
    decided TEXT
);
CREATE INDEX IF NOT EXISTS deployments_bundle ON deployments (bundle_digest);
CREATE TABLE IF NOT EXISTS rollouts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment_id INTEGER NOT NULL UNIQUE REFERENCES deployments (id),
    plan TEXT NOT NULL,
    state TEXT NOT NULL,
    waves TEXT NOT NULL DEFAULT '[]',
    wave_started TEXT,
    acknowledged_failures INTEGER NOT NULL DEFAULT 0,
    reason TEXT,
    created TEXT NOT NULL,
    updated TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS rollout_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rollout_id INTEGER NOT NULL REFERENCES rollouts (id),
    ts TEXT NOT NULL,
    kind TEXT NOT NULL,
    actor TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS rollout_events_no_update BEFORE UPDATE ON rollout_events
BEGIN SELECT RAISE(ABORT, 'rollout history is append-only'); END;
CREATE TRIGGER IF NOT EXISTS rollout_events_no_delete BEFORE DELETE ON rollout_events
BEGIN SELECT RAISE(ABORT, 'rollout history is append-only'); END;
CREATE TABLE IF NOT EXISTS bundle_transfers (
    bundle_digest TEXT NOT NULL,
    device_id TEXT NOT NULL,
    chunk TEXT NOT NULL,
    size INTEGER NOT NULL,
    PRIMARY KEY (bundle_digest, device_id, chunk)
);
CREATE TABLE IF NOT EXISTS device_groups (
    name TEXT PRIMARY KEY,
    devices TEXT,
    selector TEXT,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS telemetry (
    device_id TEXT NOT NULL,
    outbox_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts TEXT NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    received TEXT NOT NULL,
    PRIMARY KEY (device_id, outbox_id, seq)
);
CREATE INDEX IF NOT EXISTS telemetry_received ON telemetry (received);
CREATE INDEX IF NOT EXISTS telemetry_device_kind ON telemetry (device_id, kind, received);
CREATE TABLE IF NOT EXISTS captures (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id TEXT NOT NULL,
    outbox_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts TEXT NOT NULL,
    model TEXT NOT NULL,
    version INTEGER,
    scored_on TEXT NOT NULL,
    reason TEXT,
    size INTEGER NOT NULL,
    data TEXT NOT NULL,
    received TEXT NOT NULL,
    UNIQUE (device_id, outbox_id, seq)
);
CREATE INDEX IF NOT EXISTS captures_model ON captures (model, version, id);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    request_id TEXT NOT NULL,
    scored_on TEXT NOT NULL,
    split INTEGER NOT NULL,
    pairs TEXT NOT NULL,
    received TEXT NOT NULL,
    UNIQUE (source, model, request_id)
);
CREATE INDEX IF NOT EXISTS feedback_model ON feedback (model, version);
CREATE TABLE IF NOT EXISTS drift_references (
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    reference_id TEXT NOT NULL,
    reference TEXT NOT NULL,
    source TEXT NOT NULL,
    created TEXT NOT NULL,
    PRIMARY KEY (model, version)
);
CREATE TABLE IF NOT EXISTS drift_windows (
    device_id TEXT NOT NULL,
    outbox_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts TEXT NOT NULL,
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    counts TEXT NOT NULL,
    received TEXT NOT NULL,
    PRIMARY KEY (device_id, outbox_id, seq)
);
CREATE INDEX IF NOT EXISTS drift_windows_version ON drift_windows (model, version, ts);
CREATE TABLE IF NOT EXISTS drift_alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    device_id TEXT NOT NULL,
    feature TEXT NOT NULL,
    raised TEXT NOT NULL,
    cleared TEXT,
    statistics TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS drift_alerts_version ON drift_alerts (model, version, device_id, feature);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    wire_id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    params TEXT NOT NULL,
    target TEXT NOT NULL,
    plan TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    created_by TEXT,
    created TEXT NOT NULL,
    updated TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS job_devices (
    job_id INTEGER NOT NULL REFERENCES jobs (id),
    device_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    state TEXT NOT NULL,
    envelope TEXT,
    sent TEXT,
    expires TEXT,
    finished TEXT,
    answers INTEGER NOT NULL DEFAULT 0,
    result TEXT,
    error TEXT,
    PRIMARY KEY (job_id, device_id)
);
CREATE TABLE IF NOT EXISTS job_answers (
    job_id INTEGER NOT NULL,
    device_id TEXT NOT NULL,
    outbox_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (job_id, device_id, outbox_id, seq)
);
CREATE TABLE IF NOT EXISTS bundle_keys (
    digest TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    created TEXT NOT NULL
);
"""
