"""A staged rollout caught mid-way and an A/B split, built through the real API and the embedded broker.

Six devices tagged ``ring=beta`` run ``scaler`` v1; a rollout of v2 lets
them in wave by wave (canary 1, then waves of 2). Each device the rollout
admits reports v2 running over MQTT, as an agent does once the version
passed its health check, until the third wave: there one device runs v2
and one reports a failed health check, which stays under the error
threshold, so the rollout keeps waiting on that wave with one device not
yet admitted. Two ``ring=ab`` devices get an A/B split of v1 and v2 and
report model statistics with answers by class. A viewer and an operator
token are made through ``POST /api/tokens``.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleet_protocol import messages, sketch, topics
from fleet_protocol.messages import ModuleReport, TelemetryBatch, TelemetryRecord
from fleet_protocol.timestamps import to_iso
from fleet_server.clock import utc_now
from tests.support.net import wait_for

from .fleet_data import HEALTH_ERROR, Seeder

BETA = [f"edge-{i:02d}" for i in range(1, 7)]
AB = ["ab-01", "ab-02"]
PLAN = {"canary": 1, "wave_size": 2, "max_failures": 2, "wave_window_s": 3600}
WAVE_SIZES = (1, 2, 2)  # the waves this test lets run: 5 of the 6 devices, the last wave holds 1 running, 1 failed
PROFILE = "raspberry-pi-5"


@dataclass
class RolloutData:
    rollout_id: int
    ab_deployment_id: int
    waiting_device: str
    viewer_token: str
    operator_token: str


def model_stats(device_id: str, version: int, outputs: dict[str, int], *, p50_us: int, errors: int | None = None,
                module: str = "scaler", answer_output: str = "label") -> bytes:
    """A telemetry batch with one ``model_stats`` record as an agent under an A/B split writes it: half of the
    answered requests at ``p50_us``, the rest at 4x; ``errors`` defaults to ``version - 1``."""
    requests = sum(outputs.values())
    counts = [0] * sketch.KEYS
    counts[sketch.key_of(p50_us * 1000)] += requests // 2
    counts[sketch.key_of(p50_us * 4000)] += requests - requests // 2
    data = {"model": module, "version": version, "accelerator": "cpu", "requests": requests,
            "errors": version - 1 if errors is None else errors, "latency_sketch": sketch.encode(counts),
            "latency_us": {"p50": p50_us, "p95": p50_us * 4, "p99": p50_us * 4}, "outputs": outputs,
            "answer_output": answer_output}
    record = TelemetryRecord(1, to_iso(utc_now()), "model_stats", data)
    return messages.encode(TelemetryBatch(device_id, f"outbox-{device_id}", (record,)).to_dict())


def populate_rollout(url: str, token: str, broker_url: str) -> RolloutData:
    with Seeder(url, token, broker_url, "browser-test-rollout-seeder") as seed:
        v1, v2 = seed.scaler_v1_and_v2()
        for device_id in BETA + AB:
            seed.online(device_id, PROFILE, {"ring": "ab" if device_id in AB else "beta"})
            seed.report(device_id, PROFILE, ModuleReport("scaler", "running", 1, v1, accelerator="cpu"))
        seed.wait_for_modules(len(BETA + AB), "the rollout fleet to report scaler v1")
        seed.post("/api/deployments", json={"module": "scaler", "version": 1, "selector": {"ring": "beta"}})
        rollout = seed.post("/api/rollouts", json={"module": "scaler", "version": 2, "selector": {"ring": "beta"},
                                                   "plan": PLAN})

        def rollout_now() -> dict:
            return seed.api.get(f"/api/rollouts/{rollout['id']}").json()

        for wave, size in enumerate(WAVE_SIZES):
            def admitted() -> list[str] | None:
                waves = rollout_now()["waves"]
                return waves[wave] if len(waves) == wave + 1 and len(waves[wave]) == size else None

            for i, device_id in enumerate(wait_for(admitted, timeout=30, what=f"wave {wave} to let devices in")):
                if wave == len(WAVE_SIZES) - 1 and i == 1:
                    seed.report(device_id, PROFILE, ModuleReport("scaler", "failed", 1, v1, 2, v2, accelerator="cpu",
                                                                 error=HEALTH_ERROR))
                else:
                    seed.report(device_id, PROFILE, ModuleReport("scaler", "running", 2, v2, accelerator="cpu"))

        def settled() -> dict | None:
            now = rollout_now()
            return now if now["counts"]["failed"] == 1 and now["counts"]["running"] == 4 else None

        in_progress = wait_for(settled, timeout=30, what="the rollout to see 4 devices running v2 and 1 failed")
        assert in_progress["state"] == "running", in_progress

        ab = seed.post("/api/deployments", json={"module": "scaler", "version": 1, "selector": {"ring": "ab"},
                                                 "split": {"1": 50, "2": 50}})
        seed.device.publish(topics.device_topic("ab-01", "telemetry"),
                            model_stats("ab-01", 1, {"cat": 61, "dog": 30, "bird": 9}, p50_us=512))
        seed.device.publish(topics.device_topic("ab-02", "telemetry"),
                            model_stats("ab-02", 2, {"cat": 70, "dog": 24, "bird": 4, "fox": 2}, p50_us=256))
        seed.wait_for_variants(ab["id"])
        viewer = seed.post("/api/tokens", json={"name": "browser-viewer", "role": "viewer"})["token"]
        operator = seed.post("/api/tokens", json={"name": "browser-operator", "role": "operator"})["token"]
    return RolloutData(rollout_id=rollout["id"], ab_deployment_id=ab["id"], waiting_device=in_progress["waiting"][0],
                       viewer_token=viewer, operator_token=operator)
