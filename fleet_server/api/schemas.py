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


# --- devices ---------------------------------------------------------------------------------


class DeviceCreate(_In):
    id: str
    name: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)


class DeviceUpdate(_In):
    name: str | None = None
    tags: dict[str, str] | None = Field(None, description="Replaces all tags of the device")


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


# --- deployments -----------------------------------------------------------------------------


class DeploymentCreate(_In):
    module: str
    version: int | None = Field(None, ge=1, description="Default: the newest bundle of the module")
    bundle_digest: str | None = None
    devices: list[str] | None = None
    selector: dict[str, str] | None = Field(None, description="Devices whose tags include all of these")


class DeploymentTarget(BaseModel):
    devices: list[str] | None
    selector: dict[str, str] | None


class DeploymentPublic(BaseModel):
    id: int
    module: str
    version: int
    bundle_digest: str
    target: DeploymentTarget
    created: str


class DeploymentDeviceState(BaseModel):
    device_id: str
    state: Literal["pending", "installing", "running", "failed", "superseded"]
    version: int | None
    error: dict[str, Any] | None


class DeploymentDetail(DeploymentPublic):
    devices: list[DeploymentDeviceState]
    counts: dict[str, int]
