"""Finished things for the dashboard: a completed and an aborted rollout, a target that matches nothing, and an
A/B split of a label-first classifier with large counts, built through the real API and the embedded broker.

Two ``ring=done`` devices run ``scaler`` v1 and a rollout of v2 lets them in
one by one; each reports v2 running, so it completes. A rollout to the
``ring=stop`` device is aborted by the operator. Two ``ring=ab`` devices get
an A/B split (30/70) and report statistics with answers by class from the
``label`` output, in the tens of thousands, and some errors. A deployment to
``ring=nowhere`` matches no device (created with ``allow_empty``).
"""

from __future__ import annotations

from dataclasses import dataclass

from fleet_protocol import topics
from fleet_protocol.messages import ModuleReport
from tests.support.net import wait_for

from .fleet_data import Seeder
from .rollout_data import PROFILE, model_stats

RINGS = {"done-01": "done", "done-02": "done", "stop-01": "stop", "ab-01": "ab", "ab-02": "ab"}
AB_ANSWERS = {1: {"0": 14_463, "1": 6_201}, 2: {"0": 33_750, "1": 14_470}}
AB_ERRORS = {1: 31, 2: 12}


@dataclass
class EndedData:
    completed_rollout_id: int
    aborted_rollout_id: int
    ab_deployment_id: int
    empty_deployment_id: int


def populate_ended(url: str, token: str, broker_url: str) -> EndedData:
    with Seeder(url, token, broker_url, "browser-test-ended-seeder") as seed:
        def report(device_id: str, version: int, digest: str) -> None:
            seed.report(device_id, PROFILE, ModuleReport("scaler", "running", version, digest, accelerator="cpu"))

        v1, v2 = seed.scaler_v1_and_v2()
        for device_id, ring in RINGS.items():
            seed.online(device_id, PROFILE, {"ring": ring})
            report(device_id, 1, v1)
        seed.wait_for_modules(len(RINGS), "the devices to report scaler v1")

        seed.post("/api/deployments", json={"module": "scaler", "version": 1, "selector": {"ring": "done"}})
        completed = seed.post("/api/rollouts", json={"module": "scaler", "version": 2, "selector": {"ring": "done"},
                                                     "plan": {"canary": 1, "wave_size": 1}})

        def rollout_done() -> bool:
            now = seed.api.get(f"/api/rollouts/{completed['id']}").json()
            for wave in now["waves"]:
                for device_id in wave:
                    report(device_id, 2, v2)
            return now["state"] == "completed"

        wait_for(rollout_done, timeout=30, interval=0.5, what="the rollout to complete")
        aborted = seed.post("/api/rollouts", json={"module": "scaler", "version": 2, "selector": {"ring": "stop"},
                                                   "plan": {"canary": 1}})
        seed.post(f"/api/rollouts/{aborted['id']}/abort", expect=200)

        ab = seed.post("/api/deployments", json={"module": "scaler", "version": 1, "selector": {"ring": "ab"},
                                                 "split": {"1": 30, "2": 70}})
        for device_id, version in (("ab-01", 1), ("ab-02", 2)):
            seed.device.publish(topics.device_topic(device_id, "telemetry"),
                                model_stats(device_id, version, AB_ANSWERS[version], p50_us=180 * version,
                                            errors=AB_ERRORS[version], answer_output="label"))
        seed.wait_for_variants(ab["id"])
        empty = seed.post("/api/deployments", json={"module": "scaler", "version": 2,
                                                    "selector": {"ring": "nowhere"}, "allow_empty": True})
    return EndedData(completed_rollout_id=completed["id"], aborted_rollout_id=aborted["id"],
                     ab_deployment_id=ab["id"], empty_deployment_id=empty["id"])
