"""Items 1-3 of the pipeline through the API: convert a scikit-learn pickle, optimise/quantise, profile."""

from __future__ import annotations

import pickle

import numpy as np
import onnxruntime as ort

from benchmarks.models import cnn_onnx

from .conftest import npy, register


def convert(api, name: str, data: bytes):
    return api.post(f"/api/models/{name}/from-sklearn", files={"file": ("model.pkl", data)})


def test_sklearn_pickle_is_converted_to_onnx_without_zipmap(api, mlp_pickle, iris):
    response = convert(api, "iris-mlp", mlp_pickle)
    assert response.status_code == 201, response.text
    record = response.json()
    assert record["runtime"] == "onnx" and record["properties"]["converted_from"] == "sklearn:Pipeline"
    assert record["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    assert {o["name"]: o["datatype"] for o in record["outputs"]} == {"label": "INT64", "probabilities": "FP32"}
    onnx_bytes = api.get("/api/models/iris-mlp/versions/1/file").content
    x, _ = iris
    labels = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"]).run(["label"], {"input": x})[0]
    assert np.array_equal(labels, pickle.loads(mlp_pickle).predict(x))


def test_a_converted_model_registered_with_a_baseline_gets_its_drift_reference(api, forest_pickle, iris):
    x, _ = iris
    response = api.post("/api/models/iris-forest/from-sklearn", files={"file": ("model.pkl", forest_pickle),
                                                                      "baseline": ("iris.npy", npy(x))})
    assert response.status_code == 201, response.text
    assert response.json()["drift_reference"]["features"][:4] == ["input[0]", "input[1]", "input[2]", "input[3]"]
    assert api.get("/api/models/iris-forest/versions/1/drift/reference").status_code == 200


def test_pickle_of_something_other_than_an_estimator_is_refused(api):
    response = convert(api, "notamodel", pickle.dumps({"weights": [1, 2, 3]}))
    assert response.status_code == 400
    assert "not a scikit-learn estimator" in response.json()["detail"]


def test_unfitted_estimator_and_non_pickle_are_refused(api):
    from sklearn.linear_model import LogisticRegression

    assert "not fitted" in convert(api, "unfitted", pickle.dumps(LogisticRegression())).json()["detail"]
    assert "not a readable pickle" in convert(api, "garbage", b"not a pickle").json()["detail"]


def test_conversion_needs_an_operator_token(api, fleet, mlp_pickle):
    from fleet_server.store import tokens as token_store

    token_store.add_token(db=fleet.db, token="viewer-token", name="watcher", role="viewer",
                          created="2026-01-01T00:00:00Z")
    for token, status in (("not-a-token", 401), ("viewer-token", 403)):
        response = api.post("/api/models/iris-mlp/from-sklearn", files={"file": ("m.pkl", mlp_pickle)},
                            headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == status, response.text
    assert api.get("/api/models/iris-mlp").status_code == 404


def test_int8_quantisation_of_the_cnn_shrinks_it_and_keeps_the_top_class(api):
    data, feeds = cnn_onnx()
    register(api, "cnn", data)
    response = api.post("/api/models/cnn/versions/1/optimize", data={"quantize": "int8"},
                        files={"sample": ("s.npy", npy(feeds["image"]))})
    assert response.status_code == 201, response.text
    model, report = response.json()["model"], response.json()["report"]
    assert model["version"] == 2 and model["properties"]["optimized_from"] == "cnn:1"
    assert model["properties"]["optimization"] == "basic+int8-dynamic"
    assert report["size_after"] < report["size_before"] / 2
    assert report["outputs"]["logits"]["argmax_agreement"] == 1.0
    assert 0 < report["outputs"]["logits"]["max_abs_diff"] < 0.1


def test_static_int8_uses_the_calibration_array(api, mlp_pickle, iris):
    convert(api, "iris-mlp", mlp_pickle)
    x, _ = iris
    response = api.post("/api/models/iris-mlp/versions/1/optimize", data={"quantize": "int8"},
                        files={"calibration": ("c.npy", npy(x[::3])), "sample": ("s.npy", npy(x))})
    assert response.status_code == 201, response.text
    report = response.json()["report"]
    assert report["method"] == "static" and report["outputs"]["label"]["agreement"] > 0.9


def test_tree_ensemble_has_nothing_to_quantize_and_says_so(api, forest_pickle, iris):
    convert(api, "iris-rf", forest_pickle)
    x, _ = iris
    response = api.post("/api/models/iris-rf/versions/1/optimize", data={"quantize": "int8"},
                        files={"sample": ("s.npy", npy(x))})
    assert response.status_code == 201, response.text
    report = response.json()["report"]
    assert report["method"] is None and "nothing was quantized" in report["notes"][0]
    assert "TreeEnsembleClassifier" in report["notes"][0]
    assert report["outputs"]["label"]["agreement"] == 1.0


def test_sample_that_does_not_fit_the_inputs_is_refused(api, mlp_pickle):
    convert(api, "iris-mlp", mlp_pickle)
    response = api.post("/api/models/iris-mlp/versions/1/optimize", files={"sample": ("s.npy", b"not npy")})
    assert response.status_code == 400 and "not a .npy or .npz" in response.json()["detail"]


def test_profile_is_stored_with_the_version_per_local_provider(api, mlp_pickle, iris):
    convert(api, "iris-mlp", mlp_pickle)
    response = api.post("/api/models/iris-mlp/versions/1/profile", data={"runs": "20"},
                        files={"sample": ("s.npy", npy(iris[0][:1]))})
    assert response.status_code == 200, response.text
    profile = api.get("/api/models/iris-mlp/versions/1").json()["properties"]["profile"]
    assert set(profile["providers"]) == {p for p in ort.get_available_providers() if p != "AzureExecutionProvider"}
    cpu = profile["providers"]["CPUExecutionProvider"]
    assert 0 < cpu["p50_us"] <= cpu["p95_us"] <= cpu["p99_us"]
    assert cpu["throughput_per_s"] > 0 and cpu["peak_memory_kib"] >= 0
    assert profile["runs"] == 20 and profile["batch"] == 1


def test_tflite_model_is_not_profiled(api, fleet):
    from fleet_server.modelinfo import ModelInfo

    fleet.registry.insert_model_record(name="lite", info=ModelInfo("tflite", [], []),
                                       sha256=fleet.blobs.put(b"x" * 8), size=8, tags={}, properties={})
    response = api.post("/api/models/lite/versions/1/profile", files={"sample": ("s.npy", npy(np.zeros((1, 4))))})
    assert response.status_code == 400 and "only ONNX" in response.json()["detail"]
