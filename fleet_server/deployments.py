"""Deployments: validate, store, recompute the affected devices' desired state; report progress."""

from __future__ import annotations

from fleet_protocol.errors import BadDataError
from fleet_protocol.fields import HEX64
from fleet_protocol.timestamps import to_iso, utc_now

from . import targeting
from .errors import NotFoundError
from .store import bundles as bundle_store
from .store import deployments as deployment_store
from .store import devices as device_store


def create_deployment(fleet, *, module: str, version: int | None, bundle_digest: str | None,
                      devices: list[str] | None, selector: dict[str, str] | None) -> dict:
    if devices is None and selector is None:
        raise BadDataError("a deployment needs a target: 'devices' (a list of ids), 'selector' (tags), or both")
    bundle = _pick_bundle(fleet, module=module, version=version, bundle_digest=bundle_digest)
    if devices is not None:
        devices = sorted(set(devices))
        unknown = [d for d in devices if device_store.get_device(db=fleet.db, device_id=d) is None]
        if unknown:
            raise BadDataError(f"unknown device(s): {', '.join(unknown)} (register them with POST /api/devices "
                               "or start their agents first)")
    deployment = deployment_store.insert_deployment(
        db=fleet.db, module=bundle["module"], version=bundle["version"], bundle_digest=bundle["digest"],
        devices=devices, selector=selector, created=to_iso(utc_now()))
    affected = [d["id"] for d in device_store.list_devices(db=fleet.db) if targeting.targets(deployment, d)]
    fleet.desired.recompute(affected)
    return deployment


def get_deployment(fleet, deployment_id: int) -> dict:
    deployment = deployment_store.get_deployment(db=fleet.db, deployment_id=deployment_id)
    if deployment is None:
        raise NotFoundError(f"there is no deployment {deployment_id}")
    return deployment


def deployment_detail(fleet, deployment_id: int) -> dict:
    """The deployment with each targeted device's state, from what the devices reported."""
    deployment = get_deployment(fleet, deployment_id)
    deployments = deployment_store.list_deployments(db=fleet.db, module=deployment["module"])
    rows = []
    for device in device_store.list_devices(db=fleet.db):
        if targeting.targets(deployment, device):
            effective = targeting.effective_deployments(device, deployments).get(deployment["module"])
            rows.append(targeting.device_state(deployment, device, effective))
    counts = {state: 0 for state in targeting.STATES}
    for row in rows:
        counts[row["state"]] += 1
    return {**deployment, "devices": rows, "counts": counts}


def _pick_bundle(fleet, *, module: str, version: int | None, bundle_digest: str | None) -> dict:
    if bundle_digest is not None:
        if not HEX64.match(bundle_digest):
            raise BadDataError("bundle_digest must be a lowercase hex SHA-256")
        bundle = bundle_store.get_bundle(db=fleet.db, digest=bundle_digest)
        if bundle is None:
            raise NotFoundError(f"there is no bundle with digest {bundle_digest}")
        if bundle["module"] != module:
            raise BadDataError(f"bundle {bundle_digest[:12]} is module {bundle['module']!r}, not {module!r}")
        if version is not None and bundle["version"] != version:
            raise BadDataError(f"bundle {bundle_digest[:12]} is version {bundle['version']}, not {version}")
        return bundle
    bundle = bundle_store.get_by_version(db=fleet.db, module=module, version=version)
    if bundle is None:
        raise NotFoundError(f"module {module!r} has no bundle" + (f" version {version}" if version else "") +
                            " (build one with POST /api/bundles/from-module or /api/bundles/from-model)")
    return bundle
