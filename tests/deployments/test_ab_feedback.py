"""Labels come back: joined on a real agent, carried through its outbox and a real Mosquitto, counted once per
request by the server into the A/B rows, the verdict, field accuracy and a confusion matrix; and the server's own
feedback route for requests its cloud scoring answered."""

from __future__ import annotations

import json

import httpx
import numpy as np

from tests.deployments.test_ab import churn_split
from tests.deployments.test_cli import edgefleet
from tests.server.builders import tiny_onnx
from tests.support.net import wait_for

ROW_CLASS_1 = [2.0, 0.0, 0.0, 0.0]  # the classifiers answer 1 exactly when x[0] > 0
ROW_CLASS_0 = [-2.0, 0.0, 0.0, 0.0]


def score(agent, rows: list[list[float]], request_id: str | None = None) -> dict:
    body = {"inputs": [{"name": "x", "shape": [len(rows), 4], "datatype": "FP32", "data": rows}]}
    if request_id is not None:
        body["id"] = request_id
    response = httpx.post(f"{agent.scoring_url}/v2/models/churn/infer", json=body, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def send_labels(agent, request_id: str, labels: list) -> httpx.Response:
    return httpx.post(f"{agent.scoring_url}/v2/models/churn/feedback", json={"id": request_id, "labels": labels},
                      timeout=10)


def test_labels_reach_the_server_through_the_outbox_once_per_request_and_decide_the_comparison(fleet):
    agent, ab = churn_split(fleet)

    # Every answer carries an id (assigned when the request had none); the label says v2 is always right and
    # v1 wrong on every other request it answered.
    expected = {1: [0, 0], 2: [0, 0]}  # version -> [labelled rows, correct rows]
    confusion: dict[int, dict[str, dict[str, int]]] = {1: {}, 2: {}}
    ids = []
    for i in range(120):
        answer = score(agent, [ROW_CLASS_1 if i % 3 else ROW_CLASS_0])
        version, predicted = int(answer["model_version"]), answer["outputs"][0]["data"][0]
        right = version == 2 or i % 2 == 0
        label = predicted if right else 1 - predicted
        response = send_labels(agent, answer["id"], [label])
        assert response.status_code == 200, response.text
        assert response.json()["correct"] == int(right) and not response.json()["duplicate"]
        expected[version][0] += 1
        expected[version][1] += int(right)
        cell = confusion[version].setdefault(str(label), {})
        cell[str(predicted)] = cell.get(str(predicted), 0) + 1
        ids.append(answer["id"])
    assert len(set(ids)) == 120 and all(ids)

    again = send_labels(agent, ids[0], [0])
    assert again.status_code == 200 and again.json()["duplicate"], "a second label for the same request counts once"
    own = score(agent, [ROW_CLASS_1, ROW_CLASS_0], request_id="client-7")
    assert own["id"] == "client-7", "the request's own id is the one to send labels for"
    assert send_labels(agent, "client-7", [1]).status_code == 400, "one label per row"
    refused = send_labels(agent, "client-7", [1, 0.5])
    assert refused.status_code == 400 and "labels[1]" in refused.json()["error"]
    unknown = send_labels(agent, "never-scored", [1])
    assert unknown.status_code == 404 and "the last 10000 requests" in unknown.json()["error"]

    def rows():
        found = {r["version"]: r for r in fleet.api.get(f"/api/deployments/{ab['id']}/variants").json()}
        return found if sum(r["labelled"] for r in found.values()) >= 120 else None

    found = wait_for(rows, what="the labels to reach the server")
    for version, (labelled, correct) in expected.items():
        assert (found[version]["labelled"], found[version]["correct"]) == (labelled, correct), found[version]
        assert found[version]["accuracy_low"] <= correct / labelled <= found[version]["accuracy_high"]
    accuracy = {r["version"]: r for r in fleet.api.get("/api/feedback/churn").json()}
    assert {v: r["confusion"] for v, r in accuracy.items()} == confusion
    assert all((accuracy[v]["labelled"], accuracy[v]["correct"]) == tuple(expected[v]) for v in (1, 2))

    verdict = fleet.api.get(f"/api/deployments/{ab['id']}/verdict").json()
    (comparison,) = verdict["comparisons"]
    assert comparison["kind"] == "accuracy" and comparison["better"] == 2, verdict
    assert verdict["sentence"].startswith("v2 is better at 95 %: accuracy 100.0 %")

    assert json.loads(edgefleet(fleet, "deploy", "verdict", str(ab["id"]), "--json")) == verdict
    assert edgefleet(fleet, "deploy", "verdict", str(ab["id"])).strip() == verdict["sentence"]
    table = edgefleet(fleet, "deploy", "variants", str(ab["id"]))
    assert "accuracy (95 % CI)" in table and " ".join(table.split()).endswith(verdict["sentence"])
    matrices = edgefleet(fleet, "model", "accuracy", "churn")
    assert "v2 confusion matrix" in matrices and "v1 confusion matrix" in matrices
    assert json.loads(edgefleet(fleet, "model", "accuracy", "churn", "--json")) == list(accuracy.values())
    assert "no labels for nothing yet" in edgefleet(fleet, "model", "accuracy", "nothing")


def test_the_server_joins_labels_to_requests_its_cloud_scoring_answered(fleet):
    registered = fleet.api.post("/api/models/scaler", files={"file": ("model.onnx", tiny_onnx(2.0))})
    assert registered.status_code == 201, registered.text
    body = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [1, 2, 3, 4, 4, 3, 2, 1]}]}
    answer = fleet.api.post("/v2/models/scaler/infer", json=body).json()
    predicted = [str(int(np.argmax(row))) for row in np.asarray(answer["outputs"][0]["data"]).reshape(2, 4)]
    assert predicted == ["3", "0"] and answer["id"]
    assert fleet.api.post("/v2/models/scaler/infer", json=body).json()["id"] != answer["id"], "an id per request"

    sent = fleet.api.post("/v2/models/scaler/feedback", json={"id": answer["id"], "labels": [3, 2]})
    assert sent.status_code == 200 and sent.json()["correct"] == 1, sent.text
    again = fleet.api.post("/v2/models/scaler/feedback", json={"id": answer["id"], "labels": [3, 2]})
    assert again.json()["duplicate"]
    unknown = fleet.api.post("/v2/models/scaler/feedback", json={"id": "nope", "labels": [3]})
    assert unknown.status_code == 404 and "forgotten" in unknown.json()["error"]
    bad = fleet.api.post("/v2/models/scaler/feedback", json={"id": answer["id"], "labels": [True]})
    assert bad.status_code == 400 and "labels[0]" in bad.json()["error"]

    (version,) = fleet.api.get("/api/feedback/scaler").json()
    assert (version["version"], version["labelled"], version["correct"]) == (1, 2, 1)
    assert version["confusion"] == {"3": {"3": 1}, "2": {"0": 1}}
