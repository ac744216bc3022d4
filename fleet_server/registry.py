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
from collections.abc import Iterable

from fleet_protocol.errors import BadDataError
from fleet_protocol.fields import NAME
from fleet_protocol.timestamps import to_iso

from . import targeting
from .clock import utc_now
from .errors import ConflictError, NotFoundError
from .drift.service import Drift
from .drift.baseline import reference_from_baseline
from .modelinfo import ModelInfo, inspect_model
from .store import BlobNotFound, BlobStore, Database
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


class Registry:
    """The model versions over the store and the blob store; built by the fleet."""

    def __init__(self, *, db: Database, blobs: BlobStore, drift: Drift):
        self._db = db
        self._blobs = blobs
        self._drift = drift

    def register_model(self, *, name: str, data: bytes, tags: dict[str, str], properties: dict,
                       allow_duplicate: bool = False, baseline: tuple[str, bytes] | None = None) -> dict:
        """``baseline``: ``(file name, bytes)`` of the data the model's drift is measured against (see
        :mod:`.drift.baseline`); checked before anything is stored, so a bad one registers nothing."""
        check_name(name)
        info = inspect_model(data)
        sha256 = hashlib.sha256(data).hexdigest()
        warnings = self._duplicate_warnings(name=name, sha256=sha256, allow_duplicate=allow_duplicate)
        reference = None if baseline is None else reference_from_baseline(data, info.runtime, info.inputs,
                                                                          baseline[1], baseline[0])
        self._blobs.put(data, sha256)
        with self._db.transaction():
            record = self.insert_model_record(name=name, info=info, sha256=sha256, size=len(data), tags=tags,
                                              properties=properties)
            drift = None if reference is None else self._drift.set_reference(
                model=name, version=record["version"], reference=reference, source=f"baseline {baseline[0]}")
        return {**record, "warnings": warnings, **({"drift_reference": drift} if drift else {})}

    def _duplicate_warnings(self, *, name: str, sha256: str, allow_duplicate: bool) -> list[str]:
        """Refuse bytes ``name`` already holds (unless ``allow_duplicate``); a warning line for any existing copy."""
        existing = model_store.find_by_sha256(db=self._db, sha256=sha256, prefer_name=name)
        if existing is None:
            return []
        ref = f"{existing['name']}:{existing['version']}"
        if existing["name"] == name and not allow_duplicate:
            raise ConflictError(f"model {ref} already has these exact bytes (sha256 {sha256[:12]}); use {ref}, or "
                                "pass --allow-duplicate (API: allow_duplicate=true) to register a new version of the "
                                "same file anyway")
        return [f"the same file (sha256 {sha256[:12]}) is already registered as {ref}"]

    def insert_model_record(self, *, name: str, info: ModelInfo, sha256: str, size: int, tags: dict,
                            properties: dict) -> dict:
        return model_store.insert_version(db=self._db, name=name, runtime=info.runtime, sha256=sha256, size=size,
                                          inputs=info.inputs, outputs=info.outputs, tags=tags,
                                          properties=properties, created=to_iso(utc_now()))

    def search(self, *, name: str | None, q: str | None, tags: dict[str, str]) -> list[dict]:
        """The newest version of each model name among the versions matching every filter."""
        return model_store.search_latest(db=self._db, name=name, q=q, tags=tags)

    def versions(self, name: str) -> list[dict]:
        """Every version of ``name``; 404 when there is none."""
        records = model_store.list_versions(db=self._db, name=name)
        if not records:
            raise NotFoundError(f"there is no model named {name!r}")
        return records

    def get_model_version(self, *, name: str, version: int | None) -> dict:
        """Version ``version`` of ``name``, or its newest when ``version`` is None."""
        if version is None:
            record = model_store.latest_version(db=self._db, name=name)
            if record is None:
                raise NotFoundError(f"there is no model named {name!r}")
            return record
        record = model_store.get_version(db=self._db, name=name, version=version)
        if record is None:
            raise NotFoundError(f"model {name!r} has no version {version}")
        return record

    def update_version(self, *, name: str, version: int, tags: dict[str, str] | None,
                       properties: dict | None) -> dict:
        """Replace the tags and/or properties of a version (None: keep)."""
        self.get_model_version(name=name, version=version)
        return model_store.update_version(db=self._db, name=name, version=version, tags=tags, properties=properties)

    def model_file(self, *, name: str, version: int) -> tuple[int | None, Iterable[bytes], str]:
        """The version's model file to stream: its size (None when the blob store cannot tell), its bytes in
        pieces, and the file name to download it as (``name-3.onnx``)."""
        record = self.get_model_version(name=name, version=version)
        extension = "onnx" if record["runtime"] == "onnx" else "tflite"
        try:
            size, pieces = self._blobs.size(record["sha256"]), self._blobs.iter_bytes(record["sha256"])
        except BlobNotFound:
            raise NotFoundError(f"the file of model {name}:{version} is missing from the blob store") from None
        return size, pieces, f"{name}-{version}.{extension}"

    def delete_model_version(self, *, name: str, version: int) -> None:
        with self._db.transaction():
            record = self.get_model_version(name=name, version=version)
            users = self.deployments_using(name=name, version=version)
            if users:
                which = ", ".join(f"deployment {d['id']} ({d['module']} v{d['version']})" for d in users)
                raise ConflictError(f"model {name}:{version} is in use by {which}; deploy another version of the "
                                    "module first")
            model_store.delete_version(db=self._db, name=name, version=version)
            drift_store.delete_version(db=self._db, model=name, version=version)
            orphaned = not model_store.sha256_referenced(db=self._db, sha256=record["sha256"])
        if orphaned:
            self._blobs.delete(record["sha256"])

    def deployments_using(self, *, name: str, version: int) -> list[dict]:
        """Live deployments of bundles built from this model version.

        A deployment is live while it is what some device should run, or while
        its tag selector could still pick up devices that appear later (until a
        newer deployment of the module with the same selector replaces it).
        """
        digests = bundle_store.digests_built_from(db=self._db, model_name=name, model_version=version)
        candidates = deployment_store.deployments_of_bundles(db=self._db, digests=digests)
        if not candidates:
            return []
        deployments = deployment_store.list_deployments(db=self._db)
        devices = device_store.list_devices(db=self._db)
        effective = {d["id"] for device in devices
                     for d in targeting.effective_deployments(device, deployments).values()}
        live = []
        for deployment in candidates:
            selector = deployment["target"]["selector"]
            replaced = selector is not None and any(
                d["id"] > deployment["id"] and d["module"] == deployment["module"]
                and d["target"]["selector"] == selector for d in deployments)
            if deployment["id"] in effective or (selector is not None and not replaced):
                live.append(deployment)
        return live
