"""The model registry: register, look up, retag and delete model versions.

A registration reads the model with its runtime (see :mod:`.modelinfo`),
stores the bytes content-addressed and takes the next version of the name.
Registering bytes that the name already holds (same SHA-256) is refused with
409 naming that version, unless ``allow_duplicate``: a second version with
the same bytes is almost always a re-run by mistake, and would churn every
deployment that follows the newest version for no change. With the flag, or
when another name holds the bytes, the record carries a ``warnings`` line
naming the existing version.
A version that a live deployment still uses (through a bundle built from it)
cannot be deleted.
"""

from __future__ import annotations

import hashlib

from fleet_protocol.errors import BadDataError
from fleet_protocol.fields import NAME
from fleet_protocol.timestamps import to_iso

from . import targeting
from .clock import utc_now
from .errors import ConflictError, NotFoundError
from .drift import service as drift_service
from .drift.baseline import reference_from_baseline
from .modelinfo import ModelInfo, inspect_model
from .store import bundles as bundle_store
from .store import deployments as deployment_store
from .store import devices as device_store
from .store import drift as drift_store
from .store import models as model_store


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise BadDataError(f"model name {name!r} must be lowercase letters, digits, '.', '_' or '-' "
                           "(up to 64, starting with a letter or digit)")
    return name


def register_model(fleet, *, name: str, data: bytes, tags: dict[str, str], properties: dict,
                   allow_duplicate: bool = False, baseline: tuple[str, bytes] | None = None) -> dict:
    """``baseline``: ``(file name, bytes)`` of the data the model's drift is measured against (see
    :mod:`.drift.baseline`); checked before anything is stored, so a bad one registers nothing."""
    check_name(name)
    info = inspect_model(data)
    sha256 = hashlib.sha256(data).hexdigest()
    warnings = _duplicate_warnings(fleet, name=name, sha256=sha256, allow_duplicate=allow_duplicate)
    reference = None if baseline is None else reference_from_baseline(data, info.runtime, info.inputs, baseline[1],
                                                                      baseline[0])
    fleet.blobs.put(data, sha256)
    with fleet.db.transaction():
        record = insert_model_record(fleet, name=name, info=info, sha256=sha256, size=len(data), tags=tags,
                                     properties=properties)
        drift = None if reference is None else drift_service.set_reference(
            fleet, model=name, version=record["version"], reference=reference, source=f"baseline {baseline[0]}")
    return {**record, "warnings": warnings, **({"drift_reference": drift} if drift else {})}


def _duplicate_warnings(fleet, *, name: str, sha256: str, allow_duplicate: bool) -> list[str]:
    """Refuse bytes ``name`` already holds (unless ``allow_duplicate``); a warning line for any existing copy."""
    existing = model_store.find_by_sha256(db=fleet.db, sha256=sha256, prefer_name=name)
    if existing is None:
        return []
    ref = f"{existing['name']}:{existing['version']}"
    if existing["name"] == name and not allow_duplicate:
        raise ConflictError(f"model {ref} already has these exact bytes (sha256 {sha256[:12]}); use {ref}, or pass "
                            "--allow-duplicate (API: allow_duplicate=true) to register a new version of the same "
                            "file anyway")
    return [f"the same file (sha256 {sha256[:12]}) is already registered as {ref}"]


def insert_model_record(fleet, *, name: str, info: ModelInfo, sha256: str, size: int, tags: dict,
                        properties: dict) -> dict:
    return model_store.insert_version(db=fleet.db, name=name, runtime=info.runtime, sha256=sha256, size=size,
                                      inputs=info.inputs, outputs=info.outputs, tags=tags, properties=properties,
                                      created=to_iso(utc_now()))


def get_model_version(fleet, *, name: str, version: int | None) -> dict:
    """Version ``version`` of ``name``, or its newest when ``version`` is None."""
    if version is None:
        record = model_store.latest_version(db=fleet.db, name=name)
        if record is None:
            raise NotFoundError(f"there is no model named {name!r}")
        return record
    record = model_store.get_version(db=fleet.db, name=name, version=version)
    if record is None:
        raise NotFoundError(f"model {name!r} has no version {version}")
    return record


def delete_model_version(fleet, *, name: str, version: int) -> None:
    with fleet.db.transaction():
        record = get_model_version(fleet, name=name, version=version)
        users = deployments_using(fleet, name=name, version=version)
        if users:
            which = ", ".join(f"deployment {d['id']} ({d['module']} v{d['version']})" for d in users)
            raise ConflictError(f"model {name}:{version} is in use by {which}; deploy another version of the "
                                "module first")
        model_store.delete_version(db=fleet.db, name=name, version=version)
        drift_store.delete_version(db=fleet.db, model=name, version=version)
        orphaned = not model_store.sha256_referenced(db=fleet.db, sha256=record["sha256"])
    if orphaned:
        fleet.blobs.delete(record["sha256"])


def deployments_using(fleet, *, name: str, version: int) -> list[dict]:
    """Live deployments of bundles built from this model version.

    A deployment is live while it is what some device should run, or while
    its tag selector could still pick up devices that appear later (until a
    newer deployment of the module with the same selector replaces it).
    """
    digests = bundle_store.digests_built_from(db=fleet.db, model_name=name, model_version=version)
    candidates = deployment_store.deployments_of_bundles(db=fleet.db, digests=digests)
    if not candidates:
        return []
    deployments = deployment_store.list_deployments(db=fleet.db)
    devices = device_store.list_devices(db=fleet.db)
    effective = {d["id"] for device in devices for d in targeting.effective_deployments(device, deployments).values()}
    live = []
    for deployment in candidates:
        selector = deployment["target"]["selector"]
        replaced = selector is not None and any(
            d["id"] > deployment["id"] and d["module"] == deployment["module"] and d["target"]["selector"] == selector
            for d in deployments)
        if deployment["id"] in effective or (selector is not None and not replaced):
            live.append(deployment)
    return live
