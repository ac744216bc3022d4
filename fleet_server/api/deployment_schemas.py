"""Request and response bodies of deployments, staged rollouts, device groups and A/B variants (the
``deployments`` routes); the other resources' bodies are in :mod:`.schemas`, under the same rules."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from .schemas import _In


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


# --- rollouts and groups ---------------------------------------------------------------------


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


# --- A/B variants ----------------------------------------------------------------------------


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
