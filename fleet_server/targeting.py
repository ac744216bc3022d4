"""Which deployment each device should run: pure functions over plain records.

A deployment targets a device when the device is in its ``devices`` list or
when every ``key: value`` of its ``selector`` is among the device's tags (an
empty selector matches every device), so membership by selector follows the
device's tags as they change. Three more conditions apply: a withdrawn
(rolled back) deployment targets nothing, a deployment driven by a staged
rollout targets only the devices the rollout has ``admitted`` so far, and a
device whose firmware profile fails the deployment's fit check (its stored
``fit`` table, see :mod:`.pipeline.gate`) is refused: :func:`refusal` says why.
Because every path by which a device becomes a target (deployment created,
device registered, enrolled, retagged, reconnected with another profile,
A/B promoted) ends in these functions, none of them skips the check.

Merge rule, when several deployments target one device: per module, the
deployment with the highest ``priority`` wins; among equal priorities the
newest (highest id) wins. Modules are independent: deployment A may win
``detector`` while deployment B wins ``classifier`` on the same device.
:func:`explain` says, per module, which deployment won and why.
"""

from __future__ import annotations

STATES = ("pending", "installing", "running", "failed", "superseded", "refused")
REFUSED_CODE = "gate_refused"


def matches(deployment: dict, device: dict) -> bool:
    """The device is in the deployment's target (devices list or selector), admission aside."""
    target = deployment["target"]
    if target["devices"] and device["id"] in target["devices"]:
        return True
    selector = target["selector"]
    return selector is not None and all(device["tags"].get(k) == v for k, v in selector.items())


def refusal(deployment: dict, device: dict) -> list[str]:
    """Why the deployment's model does not fit the device's firmware profile (empty: it fits)."""
    fit = deployment.get("fit") or {}
    table = fit.get("profiles")
    if table is None:
        return []
    profile = device.get("profile") or ""
    if profile in table:
        return table[profile]
    if fit.get("gate"):
        return [f"firmware profile {profile or '(none reported)'} is not known, so the gate cannot be checked"]
    return []


def targets(deployment: dict, device: dict) -> bool:
    if deployment.get("withdrawn"):
        return False
    admitted = deployment.get("admitted")
    if admitted is not None and device["id"] not in admitted:
        return False
    return matches(deployment, device) and not refusal(deployment, device)


def _rank(deployment: dict) -> tuple[int, int]:
    return deployment.get("priority", 0), deployment["id"]


def effective_deployments(device: dict, deployments: list[dict]) -> dict[str, dict]:
    """``{module: deployment}`` the device should run; ``deployments`` in any order."""
    chosen: dict[str, dict] = {}
    for deployment in deployments:
        if targets(deployment, device):
            current = chosen.get(deployment["module"])
            if current is None or _rank(deployment) > _rank(current):
                chosen[deployment["module"]] = deployment
    return chosen


def explain(device: dict, deployments: list[dict]) -> list[dict]:
    """Per module: the winning deployment, the reason, and every other deployment that matched and why it lost."""
    chosen = effective_deployments(device, deployments)
    rows = []
    for module in sorted({d["module"] for d in deployments if matches(d, device)}):
        winner = chosen.get(module)
        others = []
        for d in deployments:
            if d["module"] != module or not matches(d, device) or d is winner:
                continue
            if d.get("withdrawn"):
                why = "withdrawn (rolled back)"
            elif refusal(d, device):
                why = "refused by its fit check: " + "; ".join(refusal(d, device))
            elif not targets(d, device):
                why = "its staged rollout has not reached this device yet"
            else:
                why = ("lower priority" if d.get("priority", 0) < winner.get("priority", 0)
                       else "older, same priority")
            others.append({"deployment_id": d["id"], "version": d["version"], "priority": d.get("priority", 0),
                           "reason": why})
        row = {"module": module, "deployment_id": None, "version": None, "bundle_digest": None, "priority": None,
               "reason": "no deployment targets this device for this module now", "overridden": others}
        if winner is not None:
            how = (f"device listed in deployment {winner['id']}" if device["id"] in (winner["target"]["devices"] or [])
                   else "tags match selector " + ",".join(f"{k}={v}" for k, v in sorted(winner["target"]["selector"].items())))
            row.update(deployment_id=winner["id"], version=winner["version"], bundle_digest=winner["bundle_digest"],
                       priority=winner.get("priority", 0),
                       reason=f"{how}; highest priority ({winner.get('priority', 0)}), newest among equals")
        rows.append(row)
    return rows


def device_state(deployment: dict, device: dict, effective: dict | None) -> dict:
    """One device's view of a deployment: pending, installing, running, failed, superseded or refused (its
    firmware profile fails the fit check; the error says why)."""
    row = {"device_id": device["id"], "state": "pending", "version": None, "error": None}
    reported = device.get("reported") or {}
    report = next((m for m in reported.get("modules", []) if m.get("name") == deployment["module"]), None)
    if report is not None:
        row["version"] = report.get("version")
    problems = refusal(deployment, device)
    if problems:
        row["state"], row["error"] = "refused", {"code": REFUSED_CODE, "category": "fit",
                                                 "message": "; ".join(problems)}
        return row
    if effective is None or effective["id"] != deployment["id"]:
        row["state"] = "superseded"
        return row
    digest = deployment["bundle_digest"]
    if report is not None:
        aimed_here = report.get("target_digest") == digest or (
            report.get("target_digest") is None and report.get("bundle_digest") == digest)
        if report.get("state") == "running" and report.get("bundle_digest") == digest:
            row["state"] = "running"
        elif report.get("error") and aimed_here:
            row["state"], row["error"] = "failed", report["error"]
        elif report.get("state") == "installing" and aimed_here:
            row["state"] = "installing"
        if row["state"] != "pending":
            return row
    if reported.get("error") and reported.get("generation", 0) < device.get("desired_generation", 0):
        row["state"], row["error"] = "failed", reported["error"]
    return row
