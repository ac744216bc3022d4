"""Request and response bodies. Create/Update models are what clients send; Public models are
all that leaves the server (no token hashes, no key material, no storage paths). Deployments, rollouts,
groups and A/B variants keep theirs in :mod:`.deployment_schemas`; jobs in their routes module."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- health and keys -------------------------------------------------------------------------


class HealthPublic(BaseModel):
    status: Literal["ok"] = "ok"
    broker: Literal["connected", "disconnected"]
    malformed_messages: int
    malformed_by_kind: dict[str, int]
    telemetry_records_received: int = 0  # since the server started, redeliveries included (at-least-once)
    telemetry_records_duplicate: int = 0  # of those, already stored and not stored again (exactly-once storage)
    messages_handled_by_kind: dict[str, int] = {}  # device messages this replica handled (shared: its share)
    role: Literal["leader", "follower"] = Field("leader", description="leader: this replica runs the once-only work "
                                                "(controllers, re-issues); always leader on SQLite")
    leader_epoch: int | None = Field(None, description="The epoch (fencing token) it leads at; null while it follows")


class ReadyPublic(BaseModel):
    database: Literal["ok", "unreachable"]
    broker: Literal["ok", "disconnected"]


class SigningKeyPublic(BaseModel):
    keyid: str
    public_key: str = Field(description="Ed25519 public key, hex: what agents list in trusted_keys")


class KeysPublic(BaseModel):
    signing_keys: list[SigningKeyPublic]


# --- models ----------------------------------------------------------------------------------


class TensorSpec(BaseModel):
    name: str
    datatype: str = Field(description="Open Inference Protocol datatype, e.g. FP32")
    shape: list[int] = Field(description="-1 for a dimension the model leaves open")


class ModelVersionPublic(BaseModel):
    name: str
    version: int
    runtime: Literal["onnx", "tflite"]
    sha256: str
    size: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    tags: dict[str, str]
    properties: dict[str, Any]
    created: str
    warnings: list[str] = Field(default_factory=list, description="On registration: e.g. the same file is "
                                                                  "already registered as NAME:VERSION")
    drift_reference: dict[str, Any] | None = Field(None, description="On registration with a baseline: the drift "
                                                                     "reference's rows, features and id")


class ModelVersionUpdate(_In):
    tags: dict[str, str] | None = Field(None, description="Replaces all tags of the version")
    properties: dict[str, Any] | None = Field(None, description="Replaces all properties of the version")


# --- bundles ---------------------------------------------------------------------------------


class BundleFileEntry(BaseModel):
    path: str
    size: int
    sha256: str


class BundlePublic(BaseModel):
    digest: str
    module: str
    version: int
    model_ref: str | None
    size: int
    files: list[BundleFileEntry]
    created: str


class BundleDetail(BundlePublic):
    manifest: dict = Field(description="The signed manifest envelope {signed, signatures}")


class BundleFromModelCreate(_In):
    model: str
    version: int | None = Field(None, ge=1, description="Default: the newest version")
    module: str | None = Field(None, description="Default: the model's name")
    entry_script: str | None = Field(None, description="Python source, stored as main.py")
    sample: dict[str, Any] | None = Field(None, description="An OIP inference request, stored as sample.json")
    config: dict[str, Any] | None = None
    signature: dict[str, Any] | None = Field(None, description="Inputs and outputs callers see (as module.json's); "
                                             "default: the model's own, none with an entry script")


# --- devices ---------------------------------------------------------------------------------


class DeviceCreate(_In):
    id: str
    name: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)


class DeviceUpdate(_In):
    name: str | None = None
    tags: dict[str, str] | None = Field(None, description="Replaces all tags of the device (admin token)")


class DeviceTags(_In):
    set: dict[str, str] = Field(default_factory=dict, description="Tags to add or change")
    remove: list[str] = Field(default_factory=list, description="Tag keys to remove (each must be present)")


class DevicePublic(BaseModel):
    id: str
    name: str | None
    tags: dict[str, str]
    profile: str
    status: Literal["online", "offline", "unknown"]
    last_seen: str | None
    agent_version: str
    scoring_url: str | None
    modules: list[dict[str, Any]] = Field(description="Modules from the device's reported state")
    revoked: str | None = Field(default=None, description="When the device's certificates were revoked")


class DeviceDetail(DevicePublic):
    reported: dict[str, Any] | None
    desired_generation: int


class TelemetryPublic(BaseModel):
    device_id: str
    outbox_id: str
    seq: int
    ts: str
    kind: str
    data: dict[str, Any]
    received: str


class TelemetryRollupPublic(BaseModel):
    """What a device's telemetry added up to in one minute or hour (fleet_server/telemetry_rollup.py)."""
    resolution: str  # minute or hour
    device_id: str
    model: str  # "" for the device's own row (heartbeats, events)
    version: int  # 0 where records name none (fallback counts are per model)
    bucket: str  # the bucket's start
    records: int  # raw records rolled into this row
    requests: int
    errors: int
    fallbacks: int
    heartbeats: int
    events: int
    cpu_percent_avg: int | None
    cpu_percent_max: int | None
    rss_bytes_max: int | None
    memory_percent_max: int | None
    disk_free_bytes_min: int | None
    latency_us: dict[str, int] | None  # min, p50, p95, p99, max of answered requests (within 1 %)


class CaptureSummary(BaseModel):
    id: int
    device_id: str
    outbox_id: str
    seq: int
    ts: str
    model: str
    version: int | None
    scored_on: str
    reason: str | None = None  # low_confidence: a hard example (joint inference); None: a sampled request
    size: int
    received: str


class CapturePublic(CaptureSummary):
    accelerator: str
    inputs: list[dict[str, Any]]  # Open Inference Protocol tensors
    outputs: list[dict[str, Any]]


# --- explain ---------------------------------------------------------------------------------


class ExplainOverridden(BaseModel):
    deployment_id: int
    version: int
    priority: int
    reason: str


class ExplainModule(BaseModel):
    module: str
    deployment_id: int | None
    version: int | None
    bundle_digest: str | None
    priority: int | None
    reason: str
    reported_version: int | None
    reported_state: str | None
    overridden: list[ExplainOverridden]


class DeviceExplain(BaseModel):
    device_id: str
    tags: dict[str, str]
    modules: list[ExplainModule]
    content_key_error: dict[str, Any] | None = Field(
        None, description="Why new bundles are held back from this enrolled device (content_key_unavailable): the "
                          "server holds no key of its certificates to wrap bundle keys for; renew its certificate")


# --- trust: API tokens, audit log ------------------------------------------------------------


class TokenCreate(_In):
    name: str = Field(description="Unique; names the actor in the audit log")
    role: Literal["viewer", "operator", "admin"]


class TokenPublic(BaseModel):
    name: str
    role: str
    created: str


class TokenCreated(TokenPublic):
    token: str = Field(description="The token itself: shown this once, stored only as a hash")


class AuditEntryPublic(BaseModel):
    id: int
    ts: str
    actor: str = Field(description="The API token's name (or 'enrollment:<device>' for a device enrolling)")
    action: str = Field(description="Method and route, e.g. 'POST /api/deployments'")
    target: str = Field(description="The path the request changed")
    status: int
    object: dict[str, Any] = Field(default_factory=dict, description="What it acted on: e.g. {model, version}, "
                                                                     "{deployment_id, module, devices}, "
                                                                     "{rollout_id, action}, {token}, {device_id, "
                                                                     "set, removed}")


# --- trust: device enrollment ----------------------------------------------------------------


class EnrollmentCreate(_In):
    device_id: str
    tags: dict[str, str] = Field(default_factory=dict)
    ttl_s: int | None = Field(default=None, ge=1, description="Validity in seconds; default the server's (24 h)")


class EnrollmentCreated(BaseModel):
    device_id: str
    token: str = Field(description="One-time enrollment token: shown this once, stored only as a hash")
    expires: str


class EnrollmentPublic(BaseModel):
    device_id: str
    certificate_pem: str = Field(description="The device's client certificate (CN = device id)")
    ca_certificate_pem: str
    broker_url: str
    trusted_keys: list[str] = Field(description="Ed25519 public keys (hex) bundles and desired state are signed with")


class RevocationPublic(BaseModel):
    device_id: str
    serials: list[str] = Field(description="Certificate serials now in the CRL (decimal)")
    broker_reloaded: bool = Field(description="False when the server does not know the broker's pid: reload it")


class FieldAccuracy(BaseModel):
    version: int
    labelled: int = Field(description="Rows whose true label came back (feedback), on devices and in the cloud")
    correct: int
    accuracy: float | None
    accuracy_low: float | None = Field(description="Wilson 95 % interval, lower bound")
    accuracy_high: float | None
    confusion: dict[str, dict[str, int]] = Field(description="True label -> predicted class -> rows")
