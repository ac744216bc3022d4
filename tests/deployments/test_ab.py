"""A/B splits on a real agent: traffic by weight, both versions addressable, stats per variant, promote."""

from __future__ import annotations

import httpx
import numpy as np

from tests.support.net import wait_for

X = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}


def infer(agent, path: str) -> httpx.Response:
    return httpx.post(f"{agent.scoring_url}/v2/models/scaler{path}/infer", json=BODY, timeout=10)


def test_split_follows_its_weights_each_answer_names_its_variant_and_promote_moves_all_traffic(fleet):
    (agent,) = fleet.start_agents(1)
    fleet.build()
    fleet.build(scale=3.0)
    fleet.post("/api/deployments", {"module": "scaler", "version": 1, "devices": [agent.device_id]}, expect=201)
    fleet.wait_models({"scaler": 1})
    ab = fleet.post("/api/deployments", {"module": "scaler", "version": 2, "devices": [agent.device_id],
                                         "split": {"1": 30, "2": 70}}, expect=201)
    assert ab["split"]["weight"] == 70 and [v["version"] for v in ab["split"]["variants"]] == [1]
    wait_for(lambda: infer(agent, "/versions/1").status_code == 200 and infer(agent, "/versions/2").status_code == 200,
             what="both versions to be served")
    np.testing.assert_allclose(infer(agent, "/versions/1").json()["outputs"][0]["data"], (X * 2.0).ravel())
    np.testing.assert_allclose(agent.infer("scaler", {"x": X}, version=2).outputs["y"], X * 3.0)

    answered = [agent.infer("scaler", {"x": X}).model_version for _ in range(2000)]
    share = answered.count(2) / len(answered)
    assert abs(share - 0.70) <= 0.05, f"version 2 answered {share:.1%} of requests, configured 70%"
    variants = {infer(agent, "").json()["parameters"]["variant"] for _ in range(50)}
    assert variants == {"1", "2"}

    def stats():
        rows = {r["version"]: r for r in fleet.api.get(f"/api/deployments/{ab['id']}/variants").json()}
        done = sum(r["requests"] for r in rows.values()) >= 2050
        return rows if done else None

    rows = wait_for(stats, what="per-variant statistics from telemetry")
    assert (rows[1]["weight"], rows[2]["weight"]) == (30, 70)
    assert rows[2]["requests"] > rows[1]["requests"] > 0 and rows[1]["error_rate"] == 0.0
    assert rows[1]["latency_p50_us"] is not None and rows[2]["latency_p95_us"] >= rows[2]["latency_p50_us"]
    assert set(rows[1]["outputs"]) == set(rows[2]["outputs"]) == {"3"}, "answers by class, per variant"

    promoted = fleet.post(f"/api/deployments/{ab['id']}/promote", {"version": 2}, expect=201)
    assert (promoted["version"], promoted["split"]) == (2, None)
    wait_for(lambda: infer(agent, "/versions/1").status_code == 404, what="the split to end")
    assert {agent.infer("scaler", {"x": X}).model_version for _ in range(200)} == {2}
    response = infer(agent, "").json()
    assert response["model_version"] == "2" and "variant" not in response["parameters"]
    assert fleet.api.post(f"/api/deployments/{ab['id']}/promote", json={"version": 7}).status_code == 400
