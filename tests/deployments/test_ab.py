"""A/B splits on a real agent: traffic by weight, both versions addressable, stats per variant, promote.

The comparison's rules: answers by class count every row of the label output (a converted classifier's label
comes first, or the output the module declares in ``config.answers``), requests include errors, and promote
freezes the comparison.
"""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from fleet_protocol.errors import EdgefleetError
from tests.server.builders import module_files, tar_gz
from tests.support.net import wait_for
from tests.support.postgres import BOTH_ENGINES

pytestmark = BOTH_ENGINES  # the store-touching tests run on SQLite and PostgreSQL

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
    again = fleet.api.post(f"/api/deployments/{ab['id']}/promote", json={"version": 1})
    assert again.status_code == 409 and "comparison has ended: v2 was promoted" in again.json()["detail"]


def serves(agent, module: str, version: int) -> bool:
    try:
        return set(agent.infer(module, {"x": X}, version=version).outputs) == {"label", "probabilities"}
    except EdgefleetError:
        return False


def label_first_classifier(kind: str) -> bytes:
    """A binary classifier converted as skl2onnx (and onnxmltools for LightGBM) do: ``label`` [n] first, then
    ``probabilities`` [n, 2]; class 1 exactly when x[0] > 0."""
    from skl2onnx import to_onnx
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    x = np.random.default_rng(1).normal(size=(400, 4)).astype(np.float32)
    model = (GradientBoostingClassifier(n_estimators=10, max_depth=2) if kind == "boosting"
             else LogisticRegression()).fit(x, (x[:, 0] > 0).astype(np.int64))
    onnx = to_onnx(model, x[:1], options={id(model): {"zipmap": False}}, target_opset={"": 17, "ai.onnx.ml": 3})
    onnx.graph.input[0].name = onnx.graph.node[0].input[0] = "x"
    return onnx.SerializeToString()


def churn_split(fleet) -> tuple:
    """One agent serving ``churn`` v1 (gradient boosting) and v2 (logistic regression) half and half; the agent
    and the A/B deployment."""
    (agent,) = fleet.start_agents(1)
    for kind in ("boosting", "logistic"):
        files = module_files("churn", model=label_first_classifier(kind))
        assert fleet.api.post("/api/bundles/from-module", files={"file": ("m.tar.gz", tar_gz(files))}).status_code == 201
    fleet.post("/api/deployments", {"module": "churn", "version": 1, "devices": [agent.device_id]}, expect=201)
    fleet.wait_models({"churn": 1})
    ab = fleet.post("/api/deployments", {"module": "churn", "version": 2, "devices": [agent.device_id],
                                         "split": {"1": 50, "2": 50}}, expect=201)
    wait_for(lambda: serves(agent, "churn", 1) and serves(agent, "churn", 2), what="the split to be served")
    return agent, ab


def test_answers_by_class_count_every_row_of_the_label_output_errors_count_and_promote_freezes_the_comparison(fleet):
    agent, ab = churn_split(fleet)
    batch = np.zeros((10, 4), np.float32)
    batch[:, 0] = [2, -2, -2, 2, -2, -2, -2, 2, -2, -2]  # 3 rows of class 1, 7 of class 0, in every request
    for _ in range(200):
        assert agent.infer("churn", {"x": batch}).outputs["label"].tolist() == [1, 0, 0, 1, 0, 0, 0, 1, 0, 0]
    for _ in range(6):
        with pytest.raises(EdgefleetError):
            agent.infer("churn", {"x": np.zeros((1, 3), np.float32)})

    def stats():
        rows = fleet.api.get(f"/api/deployments/{ab['id']}/variants").json()
        done = sum(r["answered"] for r in rows) >= 200 + 1 and sum(r["errors"] for r in rows) >= 6
        return rows if done else None

    rows = wait_for(stats, what="the split's statistics with its errors")
    assert sum(r["errors"] for r in rows) == 6 and all(r["requests"] == r["answered"] + r["errors"] for r in rows)
    for row in rows:
        routed = row["outputs"]["0"] + row["outputs"]["1"]
        assert row["answer_output"] == "label" and routed > 0
        assert (row["outputs"]["0"], row["outputs"]["1"]) == (routed * 7 // 10, routed * 3 // 10), row
        assert row["latency_p50_us"] <= row["latency_p95_us"] <= row["latency_p99_us"]
    assert sum(r["outputs"]["1"] for r in rows) == 3 * 200

    promoted = fleet.post(f"/api/deployments/{ab['id']}/promote", {"version": 2}, expect=201)
    frozen = fleet.api.get(f"/api/deployments/{ab['id']}/variants").json()
    decided = fleet.api.get(f"/api/deployments/{ab['id']}").json()["decided"]
    assert (decided["version"], decided["deployment_id"], decided["variants"]) == (2, promoted["id"], frozen)
    wait_for(lambda: not serves(agent, "churn", 1), what="the split to end")
    for _ in range(100):
        agent.infer("churn", {"x": batch})
    wait_for(lambda: sum(r["answered"] for r in
                         fleet.api.get(f"/api/deployments/{promoted['id']}/variants").json()) >= 100,
             what="the promoted version's requests to reach the server")
    assert fleet.api.get(f"/api/deployments/{ab['id']}/variants").json() == frozen, "a decided comparison is frozen"
    again = fleet.api.post(f"/api/deployments/{ab['id']}/promote", json={"version": 1})
    assert again.status_code == 409, again.text


def probabilities_first_model() -> bytes:
    """``probabilities`` = x[:, :2] first, then a float ``label`` = x[:, 3:] that the rule alone would not count."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    outputs = [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2]),
               helper.make_tensor_value_info("label", TensorProto.FLOAT, ["batch", 1])]
    bounds = [helper.make_tensor(n, TensorProto.INT64, [1], [v]) for n, v in
              (("s0", 0), ("e0", 2), ("s1", 3), ("e1", 4), ("axis", 1))]
    nodes = [helper.make_node("Slice", ["x", "s0", "e0", "axis"], ["probabilities"]),
             helper.make_node("Slice", ["x", "s1", "e1", "axis"], ["label"])]
    model = helper.make_model(helper.make_graph(nodes, "declared", [x], outputs, bounds),
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


def declared_module(answers: dict) -> bytes:
    files = module_files("declared", model=probabilities_first_model(), entry=None,
                         files=["model.onnx", "sample.json"], config={"answers": answers})
    del files["main.py"]
    return tar_gz(files)


def test_a_declared_label_output_is_counted_though_a_probability_output_comes_first(fleet):
    (agent,) = fleet.start_agents(1)
    refused = fleet.api.post("/api/bundles/from-module", files={"file": ("m.tar.gz", declared_module(
        {"label_output": "labels"}))})
    assert refused.status_code == 400 and "no output 'labels'" in refused.text, refused.text
    assert "probabilities, label" in refused.text, "the refusal names the outputs that exist"
    for _ in range(2):
        built = fleet.api.post("/api/bundles/from-module", files={"file": ("m.tar.gz", declared_module(
            {"label_output": "label"}))})
        assert built.status_code == 201, built.text
    fleet.post("/api/deployments", {"module": "declared", "version": 1, "devices": [agent.device_id]}, expect=201)
    fleet.wait_models({"declared": 1})
    ab = fleet.post("/api/deployments", {"module": "declared", "version": 2, "devices": [agent.device_id],
                                         "split": {"1": 50, "2": 50}}, expect=201)
    batch = np.array([[0.9, 0.1, 0, 5], [0.8, 0.2, 0, 6], [0.7, 0.3, 0, 6]], np.float32)  # argmax says 0 each

    def split_served() -> bool:
        try:
            return {agent.infer("declared", {"x": batch}, version=v).model_version for v in (1, 2)} == {1, 2}
        except EdgefleetError:
            return False

    wait_for(split_served, what="the split to be served")
    for _ in range(100):
        agent.infer("declared", {"x": batch})

    def stats():
        rows = fleet.api.get(f"/api/deployments/{ab['id']}/variants").json()
        return rows if sum(r["answered"] for r in rows) >= 100 else None

    rows = wait_for(stats, what="the split's statistics")
    assert {r["answer_output"] for r in rows} == {"label"}, rows
    assert sum(r["outputs"].get("6.0", 0) for r in rows) == 200 and sum(r["outputs"].get("5.0", 0) for r in rows) == 100
