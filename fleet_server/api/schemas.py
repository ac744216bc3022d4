"""Request and response bodies. Create/Update models are what clients send; Public models are
all that leaves the server (no token hashes, no key material, no storage paths)."""

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


# --- deployments -----------------------------------------------------------------------------


class DeploymentGate(_In):
    p95_ms: float | None = Field(None, gt=0, description="Most p95 latency allowed on each target device: the "
                                                         "stored profile scaled by its firmware profile's "
                                                         "relative_speed_percent")
    memory_mb: float | None = Field(None, gt=0, description="Most peak memory growth allowed (stored profile)")


class DeploymentCreate(_In):
    module: str
    version: int | None = Field(None, ge=1, description="Default: the newest bundle of the module")
    bundle_digest: str | None = None
    devices: list[str] | None = None
    selector: dict[str, str] | None = Field(None, description="Devices whose tags include all of these")
    group: str | None = Field(None, description="A named device group (POST /api/groups) instead of devices/selector")
    priority: int = Field(0, description="Per module, the highest priority deployment targeting a device wins; "
                                         "then the newest")
    split: dict[int, int] | None = Field(None, description="A/B: {version: weight}, the deployment's version and "
                                                           "others served side by side")
    gate: DeploymentGate | None = Field(None, description="Refuse at creation unless the model version's stored "
                                                          "profile meets these on every targeted device; devices "
                                                          "that join later and fail it are refused one by one")
    allow_empty: bool = Field(False, description="Accept a target that matches no device now (the deployment "
                                                 "waits for devices that join later); refused otherwise")


class DeploymentTarget(BaseModel):
    devices: list[str] | None
    selector: dict[str, str] | None


class DeploymentPublic(BaseModel):
    id: int
    module: str
    version: int
    bundle_digest: str
    target: DeploymentTarget
    priority: int = 0
    admitted: list[str] | None = Field(None, description="Devices a staged rollout has let in (null: all targeted)")
    withdrawn: bool = Field(False, description="Rolled back: the deployment targets no device any more")
    split: dict[str, Any] | None = Field(None, description="A/B: {weight, variants: [{version, bundle_digest, weight}]}")
    fit: dict[str, Any] | None = Field(None, description="The fit check stored at creation: {gate, profiles: "
                                                         "{firmware profile: [why the model does not fit]}}")
    decided: dict[str, Any] | None = Field(None, description="A/B ended by promote: {version, deployment_id, at, "
                                                             "variants: the comparison frozen then}")
    created: str


class DeploymentDeviceState(BaseModel):
    device_id: str
    state: Literal["pending", "installing", "running", "failed", "superseded", "refused"]
    version: int | None
    error: dict[str, Any] | None


class DeploymentDetail(DeploymentPublic):
    devices: list[DeploymentDeviceState]
    counts: dict[str, int]
    bytes_sent: int = Field(description="Chunk bytes the targeted devices asked the server for")
    bytes_saved: int = Field(description="Bytes the running devices did not download: chunks they already held")


# --- rollouts, groups, explain --------------------------------------------------------------


class RolloutPlan(_In):
    canary: int | None = Field(None, ge=1, description="Devices in the canary wave (default 1)")
    canary_percent: float | None = Field(None, gt=0, le=100)
    wave_size: int | None = Field(None, ge=1, description="Devices per wave after the canary (default: all the rest)")
    wave_percent: float | None = Field(None, gt=0, le=100)
    growth: float = Field(1.0, ge=1, description="Each wave is this many times the previous one")
    max_devices_per_minute: float | None = Field(None, gt=0, description="Rate limit on letting devices in")
    success_percent: float = Field(100.0, gt=0, le=100, description="Share of a wave running the version to advance")
    max_failures: int | None = Field(1, ge=1, description="Failed devices that trip the error threshold")
    max_failure_percent: float | None = Field(None, gt=0, le=100)
    on_failure: Literal["pause", "abort"] = "pause"
    wave_window_s: float = Field(600.0, gt=0, description="Time a wave has to succeed before the rollout pauses")


class RolloutCreate(DeploymentCreate):
    plan: RolloutPlan = Field(default_factory=RolloutPlan)


class RolloutDeviceState(DeploymentDeviceState):
    wave: int | None


class RolloutPublic(BaseModel):
    id: int
    deployment_id: int
    deployment: DeploymentPublic
    plan: dict[str, Any]
    state: Literal["running", "paused", "completed", "aborted", "rolled_back"]
    reason: str | None
    wave: int = Field(description="Index of the current wave (0 = canary, -1 = none yet)")
    waves: list[list[str]]
    wave_started: str | None
    devices: list[RolloutDeviceState]
    waiting: list[str] = Field(description="Targeted devices no wave has let in yet")
    counts: dict[str, int]
    created: str
    updated: str


class RolloutEvent(BaseModel):
    id: int
    ts: str
    kind: str
    actor: Literal["operator", "controller"]
    detail: dict[str, Any]


class GroupCreate(_In):
    name: str
    devices: list[str] | None = None
    selector: dict[str, str] | None = Field(None, description="Members: devices whose tags include all of these")


class GroupPublic(BaseModel):
    name: str
    devices: list[str] | None
    selector: dict[str, str] | None
    members: list[str] = Field(description="Devices in the group now")
    created: str


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


class PromoteRequest(_In):
    version: int = Field(ge=1, description="The winning version: it gets all the traffic")


class VariantStats(BaseModel):
    version: int
    weight: int
    devices: int = Field(description="Devices that reported statistics for this version")
    requests: int = Field(description="Every request this version served, errors included")
    answered: int = Field(description="Requests answered without an error")
    errors: int
    error_rate: float = Field(description="errors / requests")
    latency_p50_us: float | None = Field(description="Of answered requests; within 1 % of the true quantile")
    latency_p95_us: float | None
    latency_p99_us: float | None
    outputs: dict[str, int] = Field(description="Answers by class over every row the split routed (the label "
                                                "output, else the argmax of a score per class)")
    answer_output: str | None = Field(None, description="The output counted in outputs")
    unreadable_records: int = Field(0, description="Malformed reports left out")
    labelled: int = Field(0, description="Rows the split routed here whose true label came back (feedback)")
    correct: int = Field(0, description="Of those, rows whose predicted class equals the label")
    accuracy: float | None = Field(None, description="correct / labelled")
    accuracy_low: float | None = Field(None, description="Wilson 95 % interval of the accuracy, lower bound")
    accuracy_high: float | None = Field(None, description="Wilson 95 % interval of the accuracy, upper bound")


class VariantComparison(BaseModel):
    version: int
    baseline: int = Field(description="The deployment's main version, which each variant is compared with")
    kind: str = Field(description="accuracy (both have labels) or no_labels (errors and class mix only)")
    better: int | None = Field(description="The better version, only when its test passed")
    p_value: float | None = Field(description="Two-proportion z-test on the labelled rows")
    more_requests: int | None = Field(description="About how many more requests a decision needs (power 80 %)")
    error_p_value: float | None = Field(None, description="Without labels: two-proportion z-test on errors")
    class_shift_p_value: float | None = Field(None, description="Without labels: chi-square on answers by class")
    sentence: str


class Verdict(BaseModel):
    baseline: int
    confidence: float
    comparisons: list[VariantComparison]
    sentence: str = Field(description="The decision in one plain sentence per variant")


class FieldAccuracy(BaseModel):
    version: int
    labelled: int = Field(description="Rows whose true label came back (feedback), on devices and in the cloud")
    correct: int
    accuracy: float | None
    accuracy_low: float | None = Field(description="Wilson 95 % interval, lower bound")
    accuracy_high: float | None
    confusion: dict[str, dict[str, int]] = Field(description="True label -> predicted class -> rows")
