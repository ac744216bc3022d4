"""Deployments and device groups: validate, store, recompute the affected devices' desired state; report
progress; explain which deployment put each module on a device (merge rule in :mod:`.targeting`)."""

from __future__ import annotations

from fleet_protocol.errors import BadDataError
from fleet_protocol.fields import HEX64, NAME
from fleet_protocol.timestamps import to_iso, utc_now

from . import targeting
from .errors import ConflictError, NotFoundError
from .pipeline import gate as fit_gate
from .store import bundles as bundle_store
from .store import deployments as deployment_store
from .store import devices as device_store
from .store import models as model_store
from .store import rollouts as rollout_store


def create_deployment(fleet, *, module: str, version: int | None, bundle_digest: str | None,
                      devices: list[str] | None, selector: dict[str, str] | None, group: str | None = None,
                      priority: int = 0, admitted: list[str] | None = None,
                      split: dict[int, int] | None = None, gate: dict | None = None) -> dict:
    """Store a deployment and publish the new desired state of every device it now targets.

    ``group`` copies a named group's devices and selector into the target
    (a selector keeps following device tags); ``admitted`` is for staged
    rollouts (see :mod:`.rollouts`), None meaning every targeted device;
    ``split`` ``{version: weight}`` serves several versions side by side (A/B);
    ``gate`` ``{"p95_ms", "memory_mb"}`` and every targeted device's firmware
    profile limits are checked before anything is stored (:mod:`.pipeline.gate`).
    """
    if group is not None:
        devices, selector = _group_target(fleet, group, devices, selector)
    if devices is None and selector is None:
        raise BadDataError("a deployment needs a target: 'devices' (a list of ids), 'selector' (tags), 'group', "
                           "or several")
    bundle = _pick_bundle(fleet, module=module, version=version, bundle_digest=bundle_digest)
    split_doc = _split(fleet, bundle, split) if split else None
    if devices is not None:
        devices = sorted(set(devices))
        unknown = [d for d in devices if device_store.get_device(db=fleet.db, device_id=d) is None]
        if unknown:
            raise BadDataError(f"unknown device(s): {', '.join(unknown)} (register them with POST /api/devices "
                               "or start their agents first)")
    _check_fit(fleet, [bundle] + [bundle_store.get_bundle(db=fleet.db, digest=v["bundle_digest"])
                                  for v in (split_doc or {}).get("variants", [])], devices, selector, gate)
    deployment = deployment_store.insert_deployment(
        db=fleet.db, module=bundle["module"], version=bundle["version"], bundle_digest=bundle["digest"],
        devices=devices, selector=selector, created=to_iso(utc_now()), priority=priority, admitted=admitted,
        split=split_doc)
    affected = [d["id"] for d in device_store.list_devices(db=fleet.db) if targeting.targets(deployment, d)]
    if affected:
        fleet.desired.recompute(affected)
    return deployment


def _check_fit(fleet, bundles: list[dict], devices: list[str] | None, selector: dict[str, str] | None,
               gate: dict | None) -> None:
    """Refuse (400, every device and number listed) when a bundle's model does not fit a targeted device."""
    probe = {"target": {"devices": devices, "selector": selector}}
    targeted = [d for d in device_store.list_devices(db=fleet.db) if targeting.matches(probe, d)]
    problems = []
    for bundle in bundles:
        model = (model_store.get_version(db=fleet.db, name=bundle["model_name"], version=bundle["model_version"])
                 if bundle["model_name"] else None)
        problems += fit_gate.check(model=model, bundle_label=f"{bundle['module']} v{bundle['version']}",
                                   devices=targeted, gate=gate)
    if problems:
        raise BadDataError("deployment refused, nothing was pushed:\n  " + "\n  ".join(problems))


def promote(fleet, deployment_id: int, version: int) -> dict:
    """End an A/B split: a new deployment (same target and priority) of the winning version alone."""
    deployment = get_deployment(fleet, deployment_id)
    versions = {deployment["version"]} | {v["version"] for v in (deployment.get("split") or {}).get("variants", [])}
    if version not in versions:
        raise BadDataError(f"version {version} is not one of deployment {deployment_id}'s variants "
                           f"({', '.join(map(str, sorted(versions)))})")
    target = deployment["target"]
    return create_deployment(fleet, module=deployment["module"], version=version, bundle_digest=None,
                             devices=target["devices"], selector=target["selector"], priority=deployment["priority"])


def _split(fleet, bundle: dict, split: dict[int, int]) -> dict:
    if bundle["version"] not in split or len(split) < 2:
        raise BadDataError(f"split must give a weight to version {bundle['version']} (the deployment's) and to at "
                           "least one other version")
    if any(w < 0 for w in split.values()) or not sum(split.values()):
        raise BadDataError("split weights must be >= 0 and not all 0")
    variants = []
    for version, weight in sorted(split.items()):
        if version != bundle["version"]:
            other = _pick_bundle(fleet, module=bundle["module"], version=version, bundle_digest=None)
            variants.append({"version": version, "bundle_digest": other["digest"], "weight": weight})
    return {"weight": split[bundle["version"]], "variants": variants}


def explain_device(fleet, device_id: str) -> dict:
    """Which deployment put each module version on the device, and why the others did not."""
    device = device_store.get_device(db=fleet.db, device_id=device_id)
    if device is None:
        raise NotFoundError(f"there is no device {device_id!r}")
    reported = {m["name"]: m for m in (device.get("reported") or {}).get("modules", [])}
    rows = targeting.explain(device, deployment_store.list_deployments(db=fleet.db))
    for row in rows:
        report = reported.get(row["module"], {})
        row["reported_version"], row["reported_state"] = report.get("version"), report.get("state")
    return {"device_id": device_id, "tags": device["tags"], "modules": rows}


def create_group(fleet, *, name: str, devices: list[str] | None, selector: dict[str, str] | None) -> dict:
    if not NAME.fullmatch(name):
        raise BadDataError(f"group name {name!r} must be a lowercase name (letters, digits, '.', '_', '-')")
    if devices is None and selector is None:
        raise BadDataError("a group needs 'devices', 'selector' or both")
    if not rollout_store.put_group(db=fleet.db, name=name, devices=sorted(set(devices)) if devices else devices,
                                   selector=selector, created=to_iso(utc_now())):
        raise ConflictError(f"group {name!r} already exists")
    return group_detail(fleet, name)


def group_detail(fleet, name: str) -> dict:
    group = rollout_store.get_group(db=fleet.db, name=name)
    if group is None:
        raise NotFoundError(f"there is no group {name!r}")
    probe = {"target": {"devices": group["devices"], "selector": group["selector"]}}
    members = [d["id"] for d in device_store.list_devices(db=fleet.db) if targeting.matches(probe, d)]
    return {**group, "members": members}


def _group_target(fleet, group: str, devices: list[str] | None,
                  selector: dict[str, str] | None) -> tuple[list[str] | None, dict[str, str] | None]:
    if devices is not None or selector is not None:
        raise BadDataError("give either 'group' or 'devices'/'selector', not both")
    found = rollout_store.get_group(db=fleet.db, name=group)
    if found is None:
        raise NotFoundError(f"there is no group {group!r} (create it with POST /api/groups)")
    return found["devices"], found["selector"]


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
    requested = deployment_store.bytes_requested(db=fleet.db, bundle_digest=deployment["bundle_digest"])
    size = bundle_store.get_bundle(db=fleet.db, digest=deployment["bundle_digest"])["size"]
    running = [r["device_id"] for r in rows if r["state"] == "running"]
    return {**deployment, "devices": rows, "counts": counts,
            "bytes_sent": sum(requested.get(r["device_id"], 0) for r in rows),
            "bytes_saved": sum(max(0, size - requested.get(d, 0)) for d in running)}


def _pick_bundle(fleet, *, module: str, version: int | None, bundle_digest: str | None) -> dict:
    if bundle_digest is not None:
        if not HEX64.fullmatch(bundle_digest):
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
