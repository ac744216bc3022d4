"""Joint inference on a real fleet: the device's small model answers, its unsure rows get the cloud's bigger model.

Real Mosquitto, the real fleet server (HTTP cloud scoring and MQTT) and a real agent in this process. The
device serves a logistic regression, the cloud a random forest (:mod:`tests.support.classifiers`: a data set
where they disagree). The measured accuracies (local only, cloud only, joint) and the share of rows sent to
the cloud are printed (``-s``) for the README; only rules that cannot flake are asserted.
"""

from __future__ import annotations

import httpx
import numpy as np

from fleet_protocol import oip
from tests.offline.fleet import running_fleet, until
from tests.support.classifiers import disagreeing

THRESHOLD = "0.6"
CONFIG = {"answers": {"probability_output": "probabilities"},
          "fallback": {"confidence_below": THRESHOLD, "cloud_model": "forest"}}


def deploy_regression_with_forest_behind(fleet) -> None:
    data = disagreeing()
    for name, onnx in (("forest", data.big_onnx), ("regression", data.small_onnx)):
        fleet.api.post(f"/api/models/{name}", files={"file": ("m.onnx", onnx)}).raise_for_status()
    bundle = fleet.api.post("/api/bundles/from-model", json={"model": "regression", "config": CONFIG})
    bundle.raise_for_status()
    fleet.serve("regression", bundle.json()["version"])


def score_on_device(agent, x: np.ndarray) -> tuple[dict, dict]:
    response = httpx.post(f"{agent.scoring_url}/v2/models/regression/infer", json=oip.encode_request({"X": x}),
                          timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    return oip.decode_response(body), body["parameters"]


def rows(text: str | None) -> list[int]:
    return [int(r) for r in text.split(",")] if text else []


def test_rows_below_the_threshold_get_the_cloud_model_answer_and_the_rest_keep_the_local_one(tmp_path, monkeypatch):
    data = disagreeing()
    with running_fleet(tmp_path, monkeypatch) as fleet:
        agent = fleet.start_agent(tmp_path)
        deploy_regression_with_forest_behind(fleet)
        local = agent.infer("regression", {"X": data.x_test}).outputs  # in process: no fallback at all
        cloud = oip.decode_response(fleet.api.post("/v2/models/forest/infer",
                                                   json=oip.encode_request({"X": data.x_test})).json())
        answer, marks = score_on_device(agent, data.x_test)

        hard = np.flatnonzero(local["probabilities"].max(axis=1) < float(THRESHOLD))
        assert 0 < len(hard) < len(data.x_test), "this seed has sure and unsure rows"
        assert rows(marks["cloud_rows"]) == hard.tolist(), "every low-confidence row went to the cloud, no other"
        assert (marks["scored_on"], marks["fallback_reason"], marks["cloud_model"]) == ("joint", "low_confidence",
                                                                                       "forest")
        easy = np.setdiff1d(np.arange(len(data.x_test)), hard)
        np.testing.assert_array_equal(answer["label"][hard], cloud["label"][hard])
        np.testing.assert_array_equal(answer["label"][easy], local["label"][easy])
        np.testing.assert_array_equal(answer["probabilities"][easy], local["probabilities"][easy])

        accuracy = {name: float((labels == data.y_test).mean()) for name, labels in
                    (("local", local["label"]), ("cloud", cloud["label"]), ("joint", answer["label"]))}
        print(f"\nthreshold {THRESHOLD}: accuracy local {accuracy['local']:.3f} cloud {accuracy['cloud']:.3f} "
              f"joint {accuracy['joint']:.3f}; rows sent to the cloud {len(hard) / len(data.x_test):.3f}")
        for below in (0.5, 0.6, 0.7, 0.8, 0.9):  # the same two answers, merged at other thresholds
            unsure = local["probabilities"].max(axis=1) < below
            merged = np.where(unsure, cloud["label"], local["label"])
            print(f"  {below}: share {unsure.mean():.3f} joint accuracy {(merged == data.y_test).mean():.3f}")
        assert accuracy["joint"] >= accuracy["local"], "on this seed the forest helps where the regression is unsure"

        in_process = agent.infer_with_fallback("regression", {"X": data.x_test[hard[:3]]})
        assert in_process.scored_on == "cloud" and in_process.parameters["cloud_rows"] == "0,1,2"
        np.testing.assert_array_equal(in_process.outputs["label"], cloud["label"][hard[:3]])

        def counted() -> bool:
            records = fleet.api.get("/api/devices/dev-1/telemetry", params={"kind": "fallback"}).json()
            return sum((r["data"]["reasons"].get("low_confidence", {}).get("cloud", 0) for r in records), 0) >= 2

        until(counted, "the low_confidence fallback counts in the server's telemetry")
        captured = until(lambda: fleet.api.get("/api/captures", params={"reason": "low_confidence"}).json(),
                         "the hard examples among the captures")
        first = fleet.api.get(f"/api/captures/{captured[0]['id']}").json()
        assert (first["scored_on"], first["reason"], first["model"]) == ("cloud", "low_confidence", "regression")
        x = {t["name"]: t for t in first["inputs"]}["X"]
        assert x["shape"] == [len(hard), 12], "the capture holds the hard rows, with the cloud's answer"


def test_when_the_cloud_is_unreachable_the_local_answer_comes_back_marked_low_confidence(tmp_path, monkeypatch):
    data = disagreeing()
    x = data.x_test[:40]
    with running_fleet(tmp_path, monkeypatch) as fleet:
        agent = fleet.start_agent(tmp_path, cloud_retries=0)
        deploy_regression_with_forest_behind(fleet)
        local = agent.infer("regression", {"X": x}).outputs
        hard = np.flatnonzero(local["probabilities"].max(axis=1) < float(THRESHOLD))
        assert len(hard), "some rows of these are unsure"
        fleet.stop_server()
        answer, marks = score_on_device(agent, x)
        assert (marks["scored_on"], marks["low_confidence"], marks["fallback_reason"]) == ("local", True,
                                                                                         "low_confidence")
        assert rows(marks["low_confidence_rows"]) == hard.tolist() and "cloud_rows" not in marks
        np.testing.assert_array_equal(answer["label"], local["label"])
        fleet.start_server()
        captured = until(lambda: fleet.api.get("/api/captures", params={"reason": "low_confidence"}).json(),
                         "the hard example kept for retraining")
        assert captured[0]["scored_on"] == "local"
        until(lambda: any(r["data"]["reasons"].get("low_confidence", {}).get("local")
                          for r in fleet.api.get("/api/devices/dev-1/telemetry", params={"kind": "fallback"}).json()),
              "the low_confidence count of answers kept local")


def test_a_request_waiting_for_the_cloud_model_is_not_counted_as_scoring_here(tmp_path, monkeypatch):
    data = disagreeing()
    with running_fleet(tmp_path, monkeypatch) as fleet:
        agent = fleet.start_agent(tmp_path)
        deploy_regression_with_forest_behind(fleet)
        client, in_flight_here = agent.offload.client, []
        ask_cloud = client.infer

        def infer(*args, **kwargs):  # the real call, noting what max_queue and latency_slo_ms would see
            in_flight_here.append(agent.offload._inflight["regression"])
            return ask_cloud(*args, **kwargs)

        monkeypatch.setattr(client, "infer", infer)
        _, marks = score_on_device(agent, data.x_test[:40])
        assert marks["scored_on"] == "joint" and in_flight_here == [0], "only local scoring is in flight here"
