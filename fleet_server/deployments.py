"""Deployments and device groups: validate, store, recompute the affected devices' desired state; report
progress; explain which deployment put each module on a device (merge rule in :mod:`.targeting`)."""

from __future__ import annotations

from fleet_protocol.errors import BadDataError
from fleet_protocol.fields import HEX64, NAME
from fleet_protocol.timestamps import to_iso

from . import targeting
from .clock import utc_now
from .desired import DesiredStates
from .errors import ConflictError, NotFoundError
from .pipeline import gate as fit_gate
from .store import Database
from .store import bundles as bundle_store
from .store import deployments as deployment_store
from .store import devices as device_store
from .store import models as model_store
from .store import rollouts as rollout_store


class Deployments:
    """Deployments and device groups over the store; each change recomputes the desired state of the devices it
    affects. Built by the fleet."""

    def __init__(self, *, db: Database, desired: DesiredStates):
        self._db = db
        self._desired = desired

    def create_deployment(self, *, module: str, version: int | None, bundle_digest: str | None,
                          devices: list[str] | None, selector: dict[str, str] | None, group: str | None = None,
                          priority: int = 0, admitted: list[str] | None = None,
                          split: dict[int, int] | None = None, gate: dict | None = None, allow_empty: bool = False,
                          exempt: frozenset[str] = frozenset()) -> dict:
        """Store a deployment and publish the new desired state of every device it now targets.

        ``group`` copies a named group's devices and selector into the target
        (a selector keeps following device tags); ``admitted`` is for staged
        rollouts (see :mod:`.rollouts`), None meaning every targeted device;
        ``split`` ``{version: weight}`` serves several versions side by side (A/B).
        A target that matches no device now is refused unless ``allow_empty``.
        The fit table (``gate`` ``{"p95_ms", "memory_mb"}`` and the firmware
        profiles' limits, :mod:`.pipeline.gate`) is stored with the deployment, so
        devices that join later are checked too; any device targeted now that fails
        it refuses the whole deployment before anything is stored, except the
        devices in ``exempt``, which are only refused one by one.
        """
        target, targeted = self.resolve_target(devices=devices, selector=selector, group=group, what="a deployment")
        devices, selector = target["devices"], target["selector"]
        bundle = self._pick_bundle(module=module, version=version, bundle_digest=bundle_digest)
        split_doc = self._split(bundle, split) if split else None
        if not targeted and not allow_empty:
            raise BadDataError(f"no device matches {describe_target(target, group)}, so nothing would be "
                               "deployed; check the tags with `edgefleet device list`, or pass --allow-empty (API: "
                               "\"allow_empty\": true) to wait for devices that join later")
        bundles = [bundle] + [bundle_store.get_bundle(db=self._db, digest=v["bundle_digest"])
                              for v in (split_doc or {}).get("variants", [])]
        fit = self._check_fit(bundles, targeted, gate, exempt)
        deployment = deployment_store.insert_deployment(
            db=self._db, module=bundle["module"], version=bundle["version"], bundle_digest=bundle["digest"],
            devices=devices, selector=selector, created=to_iso(utc_now()), priority=priority, admitted=admitted,
            split=split_doc, fit=fit)
        # Listed again after the insert: a device that registered meanwhile saw no deployment when it was recomputed.
        affected = [d["id"] for d in device_store.list_devices(db=self._db) if targeting.targets(deployment, d)]
        if affected:
            self._desired.recompute(affected)
        return deployment

    def resolve_target(self, *, devices: list[str] | None, selector: dict[str, str] | None, group: str | None,
                       what: str) -> tuple[dict, list[dict]]:
        """The target ``{devices, selector}`` (a ``group``'s copied in) and the registered devices it matches now.

        Deployments, rollouts and remote jobs all take their target through here; :class:`BadDataError` when
        there is none or a listed device id is unknown.
        """
        if group is not None:
            devices, selector = self._group_target(group, devices, selector)
        if devices is None and selector is None:
            raise BadDataError(f"{what} needs a target: 'devices' (a list of ids), 'selector' (tags), 'group', "
                               "or several")
        if devices is not None:
            devices = sorted(set(devices))
            unknown = [d for d in devices if device_store.get_device(db=self._db, device_id=d) is None]
            if unknown:
                raise BadDataError(f"unknown device(s): {', '.join(unknown)} (enroll them with `edgefleet device "
                                   "enroll --name ID`, or start their agents first)")
        target = {"devices": devices, "selector": selector}
        return target, [d for d in device_store.list_devices(db=self._db) if targeting.matches({"target": target}, d)]

    def _check_fit(self, bundles: list[dict], targeted: list[dict], gate: dict | None,
                   exempt: frozenset[str]) -> dict:
        """The fit table to store; refuse (400, every device and number listed) when a targeted device fails it."""
        labelled = [(f"{b['module']} v{b['version']}",
                     model_store.get_version(db=self._db, name=b["model_name"], version=b["model_version"])
                     if b["model_name"] else None) for b in bundles]
        problems = fit_gate.model_problems(labelled, gate)
        fit = fit_gate.fit_table(bundles=labelled, gate=gate)
        probe = {"fit": fit}
        for device in targeted:
            if device["id"] not in exempt:
                profile = f" ({device['profile']})" if device.get("profile") in fit["profiles"] else ""
                where = f"device {device['id']}{profile}"
                problems += [f"{where}: {p}" for p in targeting.refusal(probe, device)]
        if problems:
            raise BadDataError("deployment refused, nothing was pushed:\n  " + "\n  ".join(problems))
        return fit

    def promote(self, deployment_id: int, version: int) -> dict:
        """End an A/B split: a new deployment (same target, priority and gate) of the winning version alone.

        The winner is checked against the gate again; devices the split refused stay refused (one by one).
        """
        deployment = self.get_deployment(deployment_id)
        versions = {deployment["version"]} | {v["version"] for v in (deployment.get("split") or {}).get("variants", [])}
        if version not in versions:
            raise BadDataError(f"version {version} is not one of deployment {deployment_id}'s variants "
                               f"({', '.join(map(str, sorted(versions)))})")
        target = deployment["target"]
        refused = frozenset(d["id"] for d in device_store.list_devices(db=self._db)
                            if targeting.matches(deployment, d) and targeting.refusal(deployment, d))
        return self.create_deployment(module=deployment["module"], version=version, bundle_digest=None,
                                      devices=target["devices"], selector=target["selector"],
                                      priority=deployment["priority"], gate=(deployment.get("fit") or {}).get("gate"),
                                      allow_empty=True, exempt=refused)

    def _split(self, bundle: dict, split: dict[int, int]) -> dict:
        if bundle["version"] not in split or len(split) < 2:
            raise BadDataError(f"split must give a weight to version {bundle['version']} (the deployment's) and to at "
                               "least one other version")
        if any(w < 0 for w in split.values()) or not sum(split.values()):
            raise BadDataError("split weights must be >= 0 and not all 0")
        variants = []
        for version, weight in sorted(split.items()):
            if version != bundle["version"]:
                other = self._pick_bundle(module=bundle["module"], version=version, bundle_digest=None)
                variants.append({"version": version, "bundle_digest": other["digest"], "weight": weight})
        return {"weight": split[bundle["version"]], "variants": variants}

    def explain_device(self, device_id: str) -> dict:
        """Which deployment put each module version on the device, and why the others did not."""
        device = device_store.get_device(db=self._db, device_id=device_id)
        if device is None:
            raise NotFoundError(f"there is no device {device_id!r}")
        reported = {m["name"]: m for m in (device.get("reported") or {}).get("modules", [])}
        rows = targeting.explain(device, deployment_store.list_deployments(db=self._db))
        for row in rows:
            report = reported.get(row["module"], {})
            row["reported_version"], row["reported_state"] = report.get("version"), report.get("state")
        keys = self._desired.content_keys
        return {"device_id": device_id, "tags": device["tags"], "modules": rows,
                "content_key_error": keys.unavailable(device_id, keys.recipients(device_id))}

    def retag_device(self, device_id: str, *, set_tags: dict[str, str], remove: list[str]) -> dict:
        """Set and remove tags, recompute the device's desired state (selectors and fit checks re-evaluated) and
        explain the result per module. Removing a tag the device lacks is refused, naming the tags it has."""
        device = device_store.get_device(db=self._db, device_id=device_id)
        if device is None:
            raise NotFoundError(f"there is no device {device_id!r}")
        if not set_tags and not remove:
            raise BadDataError("give tags to set (key=value) or to remove")
        both = sorted(set(set_tags) & set(remove))
        if both:
            raise BadDataError(f"tag(s) {', '.join(both)} both set and removed; do one or the other")
        missing = [key for key in remove if key not in device["tags"]]
        if missing:
            raise BadDataError(f"device {device_id} has no tag {', '.join(map(repr, missing))} to remove (its tags: "
                               f"{', '.join(sorted(device['tags'])) or 'none'})")
        if any(not key for key in set_tags):
            raise BadDataError("a tag key cannot be empty")
        tags = {k: v for k, v in {**device["tags"], **set_tags}.items() if k not in remove}
        device_store.update_device(db=self._db, device_id=device_id, tags=tags)
        self._desired.recompute([device_id])
        return self.explain_device(device_id)

    def create_group(self, *, name: str, devices: list[str] | None, selector: dict[str, str] | None) -> dict:
        if not NAME.fullmatch(name):
            raise BadDataError(f"group name {name!r} must be a lowercase name (letters, digits, '.', '_', '-')")
        if devices is None and selector is None:
            raise BadDataError("a group needs 'devices', 'selector' or both")
        if not rollout_store.put_group(db=self._db, name=name, devices=sorted(set(devices)) if devices else devices,
                                       selector=selector, created=to_iso(utc_now())):
            raise ConflictError(f"group {name!r} already exists")
        return self.group_detail(name)

    def group_detail(self, name: str) -> dict:
        group = rollout_store.get_group(db=self._db, name=name)
        if group is None:
            raise NotFoundError(f"there is no group {name!r}")
        probe = {"target": {"devices": group["devices"], "selector": group["selector"]}}
        members = [d["id"] for d in device_store.list_devices(db=self._db) if targeting.matches(probe, d)]
        return {**group, "members": members}

    def _group_target(self, group: str, devices: list[str] | None,
                      selector: dict[str, str] | None) -> tuple[list[str] | None, dict[str, str] | None]:
        if devices is not None or selector is not None:
            raise BadDataError("give either 'group' or 'devices'/'selector', not both")
        found = rollout_store.get_group(db=self._db, name=group)
        if found is None:
            raise NotFoundError(f"there is no group {group!r} (create it with `edgefleet device group create "
                                f"{group} --selector tag=value`)")
        return found["devices"], found["selector"]

    def list_deployments(self, *, module: str | None = None) -> list[dict]:
        return deployment_store.list_deployments(db=self._db, module=module)

    def list_groups(self) -> list[dict]:
        return [self.group_detail(g["name"]) for g in rollout_store.list_groups(db=self._db)]

    def get_deployment(self, deployment_id: int) -> dict:
        deployment = deployment_store.get_deployment(db=self._db, deployment_id=deployment_id)
        if deployment is None:
            raise NotFoundError(f"there is no deployment {deployment_id}")
        return deployment

    def deployment_detail(self, deployment_id: int) -> dict:
        """The deployment with each targeted device's state, from what the devices reported; devices in its target
        that its fit check refuses are listed as ``refused`` with the reason."""
        deployment = self.get_deployment(deployment_id)
        deployments = deployment_store.list_deployments(db=self._db, module=deployment["module"])
        rows = []
        for device in device_store.list_devices(db=self._db):
            if targeting.targets(deployment, device) or (
                    not deployment["withdrawn"] and targeting.matches(deployment, device)
                    and targeting.refusal(deployment, device)):
                effective = targeting.effective_deployments(device, deployments).get(deployment["module"])
                rows.append(targeting.device_state(deployment, device, effective))
        counts = {state: 0 for state in targeting.STATES}
        for row in rows:
            counts[row["state"]] += 1
        requested = deployment_store.bytes_requested(db=self._db, bundle_digest=deployment["bundle_digest"])
        size = bundle_store.get_bundle(db=self._db, digest=deployment["bundle_digest"])["size"]
        running = [r["device_id"] for r in rows if r["state"] == "running"]
        return {**deployment, "devices": rows, "counts": counts,
                "bytes_sent": sum(requested.get(r["device_id"], 0) for r in rows),
                "bytes_saved": sum(max(0, size - requested.get(d, 0)) for d in running)}

    def _pick_bundle(self, *, module: str, version: int | None, bundle_digest: str | None) -> dict:
        if bundle_digest is not None:
            if not HEX64.fullmatch(bundle_digest):
                raise BadDataError("bundle_digest must be a lowercase hex SHA-256")
            bundle = bundle_store.get_bundle(db=self._db, digest=bundle_digest)
            if bundle is None:
                raise NotFoundError(f"there is no bundle with digest {bundle_digest}")
            if bundle["module"] != module:
                raise BadDataError(f"bundle {bundle_digest[:12]} is module {bundle['module']!r}, not {module!r}")
            if version is not None and bundle["version"] != version:
                raise BadDataError(f"bundle {bundle_digest[:12]} is version {bundle['version']}, not {version}")
            return bundle
        bundle = bundle_store.get_by_version(db=self._db, module=module, version=version)
        if bundle is None:
            raise NotFoundError(f"module {module!r} has no bundle" + (f" version {version}" if version else "") +
                                " (build one with `edgefleet module build FOLDER`)")
        return bundle


def describe_target(target: dict, group: str | None = None) -> str:
    """``selector site=lab``, ``devices d1,d2`` or ``group lab``, for messages."""
    if group is not None:
        return f"group {group}"
    parts = []
    if target.get("devices") is not None:
        parts.append("devices " + (",".join(target["devices"]) or "(none)"))
    if target.get("selector") is not None:
        parts.append("selector " + (",".join(f"{k}={v}" for k, v in sorted(target["selector"].items()))
                                    or "(empty)"))
    return " or ".join(parts)
