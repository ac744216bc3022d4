"""A/B results: per version of a split deployment, what the devices' telemetry says; and the end of a comparison.

Agents report ``model_stats`` per version at each heartbeat
(:func:`edge_agent.telemetry.model_stats`). For one split deployment this
sums them over the devices it targets, from its creation on, per version:

- ``requests``: every request the version served, ``errors`` included;
  ``answered`` = requests - errors; ``error_rate`` = errors / requests;
- ``latency_p50_us`` / ``p95`` / ``p99``: of the answered requests, from the
  devices' latency sketches merged key by key (:mod:`fleet_protocol.sketch`):
  within 1 % (relative) of the true quantile of every latency the devices
  measured, however many devices and reports;
- ``outputs``: answers by class over every row of the requests the split
  routed, counted on the device by the rule in :mod:`edgefleet_runtime.answers`
  (the label output when there is one, else the argmax of a score per
  class); ``answer_output`` names the output counted;
- ``unreadable_records``: reports left out because they were malformed;
- ``labelled`` / ``correct`` / ``accuracy`` with its Wilson interval
  (``accuracy_low``, ``accuracy_high``): labels that came back
  (:mod:`fleet_server.feedback`) for requests the split routed to the version
  on the targeted devices since the deployment was created.

:meth:`Variants.verdict_of` decides between the versions (:mod:`fleet_server.ab_verdict`).

A comparison ends at promote: :meth:`Variants.promote` stores the rows as they stand
with the winning version and the new deployment, and from then on
:meth:`Variants.variant_stats` returns that record, unchanged by later telemetry, and
a second promote is refused (409). Nothing here writes telemetry.
"""

from __future__ import annotations

import logging

from fleet_protocol import sketch
from fleet_protocol.errors import MessageError
from fleet_protocol.timestamps import to_iso

from . import targeting
from .ab_verdict import verdict
from .feedback import tally
from .clock import utc_now
from .deployments import Deployments
from .errors import ConflictError, NotFoundError
from .store import Database
from .store import deployments as deployment_store
from .store import devices as device_store
from .store import feedback as feedback_store

log = logging.getLogger("edgefleet.server.variants")

MAX_CLASSES = 100  # classes kept per variant, the largest; the rest are summed under "other"


class Variants:
    """A/B comparisons of split deployments, from telemetry and labels in the store; built by the fleet."""

    def __init__(self, *, db: Database, deployments: Deployments):
        self._db = db
        self._deployments = deployments

    def variant_stats(self, deployment_id: int) -> list[dict]:
        """The comparison's rows: frozen once decided, else live from telemetry."""
        deployment = self._get(deployment_id)
        if deployment.get("decided"):
            return deployment["decided"]["variants"]
        return self._live(deployment)

    def verdict_of(self, deployment_id: int) -> dict:
        """The decision between the versions (:func:`fleet_server.ab_verdict.verdict`), the main version as
        baseline."""
        deployment = self._get(deployment_id)
        rows = deployment["decided"]["variants"] if deployment.get("decided") else self._live(deployment)
        rows = [{"labelled": 0, "correct": 0, **row} for row in rows]  # frozen before labels were counted
        return verdict(rows, deployment["version"], deployment["module"])

    def promote(self, deployment_id: int, version: int) -> dict:
        """End the comparison and promote ``version`` (:meth:`fleet_server.deployments.Deployments.promote`); 409
        the second time."""
        decided = self._claim(deployment_id, version)
        try:
            created = self._deployments.promote(deployment_id, version)
        except BaseException:
            deployment_store.set_decision(db=self._db, deployment_id=deployment_id, decided=None)  # nothing promoted
            raise
        deployment_store.set_decision(db=self._db, deployment_id=deployment_id,
                                      decided={**decided, "deployment_id": created["id"]})
        return created

    def _claim(self, deployment_id: int, version: int) -> dict:
        """Record the end of the comparison before promoting ``version`` (once: a second promote finds it)."""
        deployment = self._get(deployment_id)
        decided = {"version": version, "deployment_id": None, "at": to_iso(utc_now()),
                   "variants": self._live(deployment)}
        if deployment.get("decided") or not deployment_store.claim_decision(
                db=self._db, deployment_id=deployment_id, decided=decided):
            done = self._get(deployment_id)["decided"] or decided
            as_what = f"as deployment {done['deployment_id']}" if done["deployment_id"] else "(in progress)"
            raise ConflictError(f"deployment {deployment_id}'s A/B comparison has ended: v{done['version']} was "
                                f"promoted at {done['at']} {as_what}")
        return decided

    def _get(self, deployment_id: int) -> dict:
        deployment = deployment_store.get_deployment(db=self._db, deployment_id=deployment_id)
        if deployment is None:
            raise NotFoundError(f"there is no deployment {deployment_id}")
        return deployment

    def _live(self, deployment: dict) -> list[dict]:
        split = deployment.get("split") or {"weight": 100, "variants": []}
        weights = {deployment["version"]: split["weight"], **{v["version"]: v["weight"] for v in split["variants"]}}
        devices = [d["id"] for d in device_store.list_devices(db=self._db) if targeting.targets(deployment, d)]
        records = deployment_store.model_stats_since(db=self._db, module=deployment["module"], device_ids=devices,
                                                     since=deployment["created"])
        labels = feedback_store.pairs_by_version(db=self._db, model=deployment["module"], sources=devices,
                                                 since=deployment["created"], split_only=True)
        return [_row(version, weight, [r for r in records if r.get("version") == version], labels.get(version, []))
                for version, weight in sorted(weights.items())]


def _row(version: int, weight: int, records: list[dict], labels: list[list[str]]) -> dict:
    answered = errors = unreadable = 0
    latencies = sketch.Sketch()
    outputs: dict[str, int] = {}
    answer_outputs: dict[str, int] = {}
    reporting = set()
    for record in records:
        try:
            counts = sketch.parse(record["latency_sketch"]) if "latency_sketch" in record else {}
            ok, failed = _count(record.get("requests", 0), "requests"), _count(record.get("errors", 0), "errors")
            answers = _answers(record.get("outputs") or {})
            name = record.get("answer_output")
            if name is not None and not isinstance(name, str):
                raise MessageError("answer_output must be a string")
        except MessageError as exc:
            unreadable += 1
            log.warning("model_stats from %s left out of the A/B comparison: %s", record.get("device_id"), exc)
            continue
        reporting.add(record["device_id"])
        answered, errors = answered + ok, errors + failed
        latencies.merge(counts)
        for label, count in answers.items():
            outputs[label] = outputs.get(label, 0) + count
        if name is not None:
            answer_outputs[name] = answer_outputs.get(name, 0) + 1
    requests = answered + errors
    quantile = {q: latencies.quantile(q / 100) for q in (50, 95, 99)}
    return {"version": version, "weight": weight, "devices": len(reporting), "requests": requests,
            "answered": answered, "errors": errors, "error_rate": errors / requests if requests else 0.0,
            **{f"latency_p{q}_us": None if ns is None else round(ns / 1000, 3) for q, ns in quantile.items()},
            "outputs": _largest(outputs),
            "answer_output": max(answer_outputs, key=answer_outputs.get) if answer_outputs else None,
            "unreadable_records": unreadable, **tally(labels)}


def _count(value: object, what: str) -> int:
    if type(value) is not int or not 0 <= value <= sketch.MAX_COUNT:
        raise MessageError(f"{what} must be a whole number 0..2**53, got {value!r:.40}")
    return value


def _answers(value: object) -> dict[str, int]:
    if not isinstance(value, dict):
        raise MessageError("outputs must be an object of class: count")
    return {str(label): _count(count, f"outputs[{label!r:.40}]") for label, count in value.items()}


def _largest(outputs: dict[str, int]) -> dict[str, int]:
    if len(outputs) <= MAX_CLASSES:
        return outputs
    ranked = sorted(outputs.items(), key=lambda item: -item[1])
    kept = dict(ranked[:MAX_CLASSES - 1])
    kept["other"] = kept.get("other", 0) + sum(count for _, count in ranked[MAX_CLASSES - 1:])
    return kept
