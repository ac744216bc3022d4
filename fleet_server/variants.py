"""A/B results: per version of a split deployment, what the devices' telemetry says.

Agents report ``model_stats`` per version at each heartbeat (requests,
errors, a log2 latency histogram and, under a split, answers by class:
the argmax of the first output). This sums them over the devices the
deployment targets, from the deployment's creation on. Read-only.
"""

from __future__ import annotations

from . import deployments as deployment_service
from . import targeting
from .store import deployments as deployment_store
from .store import devices as device_store


def variant_stats(fleet, deployment_id: int) -> list[dict]:
    deployment = deployment_service.get_deployment(fleet, deployment_id)
    split = deployment.get("split") or {"weight": 100, "variants": []}
    weights = {deployment["version"]: split["weight"], **{v["version"]: v["weight"] for v in split["variants"]}}
    devices = [d["id"] for d in device_store.list_devices(db=fleet.db) if targeting.targets(deployment, d)]
    records = deployment_store.model_stats_since(db=fleet.db, module=deployment["module"], device_ids=devices,
                                                 since=deployment["created"])
    rows = []
    for version, weight in sorted(weights.items()):
        mine = [r for r in records if r.get("version") == version]
        requests = sum(int(r.get("requests", 0)) for r in mine)
        errors = sum(int(r.get("errors", 0)) for r in mine)
        histogram: dict[int, int] = {}
        outputs: dict[str, int] = {}
        for r in mine:
            for upper_us, count in (r.get("latency_us") or {}).get("buckets", []):
                histogram[int(upper_us)] = histogram.get(int(upper_us), 0) + int(count)
            for label, count in (r.get("outputs") or {}).items():
                outputs[label] = outputs.get(label, 0) + int(count)
        rows.append({"version": version, "weight": weight, "devices": len({r["device_id"] for r in mine}),
                     "requests": requests, "errors": errors,
                     "error_rate": errors / (requests + errors) if requests + errors else 0.0,
                     "latency_p50_us": _quantile(histogram, 0.50), "latency_p95_us": _quantile(histogram, 0.95),
                     "outputs": outputs})
    return rows


def _quantile(histogram: dict[int, int], q: float) -> int | None:
    """Upper bound (µs) of the bucket holding quantile ``q``; None without requests."""
    total = sum(histogram.values())
    if not total:
        return None
    seen = 0
    for upper_us in sorted(histogram):
        seen += histogram[upper_us]
        if seen >= q * total:
            return upper_us
    return max(histogram)
