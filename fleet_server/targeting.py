"""Which deployment each device should run: pure functions over plain records.

A deployment targets a device when the device is in its ``devices`` list or
when every ``key: value`` of its ``selector`` is among the device's tags (an
empty selector matches every device). For each module, the newest deployment
targeting a device wins.
"""

from __future__ import annotations


def targets(deployment: dict, device: dict) -> bool:
    target = deployment["target"]
    if target["devices"] and device["id"] in target["devices"]:
        return True
    selector = target["selector"]
    return selector is not None and all(device["tags"].get(k) == v for k, v in selector.items())


def effective_deployments(device: dict, deployments: list[dict]) -> dict[str, dict]:
    """``{module: deployment}`` the device should run; ``deployments`` in any order."""
    chosen: dict[str, dict] = {}
    for deployment in deployments:
        if targets(deployment, device):
            current = chosen.get(deployment["module"])
            if current is None or deployment["id"] > current["id"]:
                chosen[deployment["module"]] = deployment
    return chosen


def device_state(deployment: dict, device: dict, effective: dict | None) -> dict:
    """One device's view of a deployment: pending, installing, running, failed or superseded."""
    row = {"device_id": device["id"], "state": "pending", "version": None, "error": None}
    reported = device.get("reported") or {}
    report = next((m for m in reported.get("modules", []) if m.get("name") == deployment["module"]), None)
    if report is not None:
        row["version"] = report.get("version")
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


STATES = ("pending", "installing", "running", "failed", "superseded")
