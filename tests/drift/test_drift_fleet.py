"""Drift on a real fleet: a real model registered with a baseline, real agents scoring seeded inputs, the server
merging their histogram windows into PSI/JS/KS per feature and raising alerts once per crossing."""

from __future__ import annotations

import numpy as np

from tests.deployments.conftest import Fleet, fleet  # noqa: F401 - the real server fixture, reused
from tests.deployments.test_cli import edgefleet
from tests.pipeline.conftest import npy
from tests.server.builders import tiny_onnx
from tests.support.net import wait_for
from tests.support.postgres import BOTH_ENGINES

pytestmark = BOTH_ENGINES  # the store-touching tests run on SQLite and PostgreSQL

ROWS_PER_REQUEST, REQUESTS = 50, 24  # 1200 rows per device: over the 500 rows a judgement needs


def register_with_baseline(fleet: Fleet, rng: np.random.Generator) -> dict:
    baseline = rng.normal(size=(2000, 4)).astype(np.float32)
    response = fleet.api.post("/api/models/scaler", files={"file": ("scaler.onnx", tiny_onnx(2.0)),
                                                            "baseline": ("baseline.npy", npy(baseline))})
    assert response.status_code == 201, response.text
    return response.json()


def score(agent, rng: np.random.Generator, *, shift: float = 0.0) -> None:
    for _ in range(REQUESTS):
        x = rng.normal(size=(ROWS_PER_REQUEST, 4)).astype(np.float32)
        x[:, 1] += shift
        agent.infer("scaler", {"x": x})


def by_device(fleet: Fleet) -> dict:
    report = fleet.api.get("/api/models/scaler/versions/1/drift", params={"by": "device"}).json()
    return {g["group"]: g for g in report["groups"]}


def test_a_device_fed_shifted_inputs_alerts_on_the_shifted_features_only_and_a_baseline_device_on_none(fleet):
    rng = np.random.default_rng(18)
    record = register_with_baseline(fleet, rng)
    assert record["drift_reference"]["features"] == ["x[0]", "x[1]", "x[2]", "x[3]", "y[0]", "y[1]", "y[2]", "y[3]"]
    shifted, steady = fleet.start_agents(2)
    bundle = fleet.post("/api/bundles/from-model", {"model": "scaler", "version": 1}, expect=201)
    fleet.post("/api/deployments", {"module": "scaler", "version": bundle["version"],
                                    "devices": [shifted.device_id, steady.device_id]}, expect=201)
    fleet.wait_models({"scaler": bundle["version"]})

    score(shifted, rng, shift=1.0)
    score(steady, rng)
    groups = wait_for(lambda: (g := by_device(fleet)) and all(
        g.get(a.device_id, {}).get("rows") == ROWS_PER_REQUEST * REQUESTS for a in (shifted, steady)) and g,
        what="both devices' drift windows")
    alerts = fleet.api.get("/api/drift/alerts", params={"model": "scaler", "open": "true"}).json()
    assert {(a["device_id"], a["feature"]) for a in alerts} == {(shifted.device_id, "x[1]"),
                                                               (shifted.device_id, "y[1]")}
    drifted = {g: sorted(f["name"] for f in groups[g]["features"] if f["drifted"]) for g in groups}
    assert drifted == {shifted.device_id: ["x[1]", "y[1]"], steady.device_id: []}

    score(shifted, rng, shift=1.0)  # still drifting: more windows, no second alert for the same crossing
    wait_for(lambda: by_device(fleet)[shifted.device_id]["rows"] == 2 * ROWS_PER_REQUEST * REQUESTS,
             what="the shifted device's next windows")
    again = fleet.api.get("/api/drift/alerts", params={"model": "scaler"}).json()
    assert sorted(a["id"] for a in again) == sorted(a["id"] for a in alerts)

    shown = edgefleet(fleet, "model", "drift", "scaler:1", "--by", "device")
    assert "2 open" in shown and shown.count("!") == 2, shown
