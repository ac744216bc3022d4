"""Runtime host: the shipped example modules (ONNX and LiteRT, with entry scripts) load and score their samples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_agent.installer import Installer
from edgefleet_runtime.inputs import InferenceError
from edgefleet_runtime.runtime import HealthCheckError, LoadError, Runtime
from fleet_protocol import oip
from fleet_protocol.bundle_file import build_manifest
from firmware_profiles import load_profile
from fleet_protocol.signing import sign_envelope
from edge_agent.clock import utc_now
from fleet_protocol.timestamps import to_iso
from fleet_server.keys import new_signing_key
from tests.agent.helpers import Bundle, make_bundle, stage

MODULES = Path(__file__).resolve().parents[2] / "modules"
KEY = new_signing_key()


def module_bundle(folder: Path, version: int = 1) -> Bundle:
    spec = json.loads((folder / "module.json").read_text())
    files = {name: (folder / name).read_bytes() for name in spec["files"]}
    manifest = build_manifest(module=spec["name"], version=version, runtime=spec["runtime"], model=spec["model"],
                              files=files, created=to_iso(utc_now()), entry=spec.get("entry"),
                              sample=spec.get("sample"), config=spec.get("config", {}))
    return Bundle(manifest, sign_envelope(manifest.to_dict(), KEY), files)


def load(tmp_path: Path, bundle: Bundle):
    stage(tmp_path, bundle)
    record = Installer(tmp_path).install(bundle.manifest, bundle.envelope)
    runtime = Runtime(load_profile("generic-cpu"))
    return runtime, runtime.load(record)


@pytest.mark.parametrize("name", ["iris-classifier", "sensor-anomaly"])
def test_each_example_module_loads_and_scores_its_sample(tmp_path, name):
    folder = MODULES / name
    runtime, loaded = load(tmp_path, module_bundle(folder))
    assert name not in runtime.table, "loading alone serves nothing"
    runtime.activate(loaded)
    sample = oip.decode_request(json.loads((folder / "sample.json").read_text()))
    result = runtime.table[name].score(sample.inputs)
    assert result.outputs and all(isinstance(v, np.ndarray) for v in result.outputs.values())
    assert result.accelerator in ("CPUExecutionProvider", "xnnpack", "cpu")


def test_litert_module_scores_a_batch_through_its_entry_script(tmp_path):
    runtime, loaded = load(tmp_path, module_bundle(MODULES / "sensor-anomaly"))
    readings = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)
    outputs = loaded.score({"sensor_readings": readings}).outputs
    assert outputs["anomaly_score"].shape == (3, 1) and outputs["is_anomaly"].dtype == np.bool_
    with pytest.raises(InferenceError, match="shape"):
        loaded.score({"sensor_readings": np.zeros((2, 5), np.float32)})
    assert loaded.stats.take()[1] == 1


def test_a_model_that_is_not_a_model_fails_to_load_with_category_load(tmp_path):
    bundle = make_bundle(KEY)
    bundle.files["model.onnx"] = b"not an onnx model"
    manifest = build_manifest(module="linear", version=1, runtime="onnx", model="model.onnx", files=bundle.files,
                              created=to_iso(utc_now()))
    with pytest.raises(LoadError) as caught:
        load(tmp_path, Bundle(manifest, sign_envelope(manifest.to_dict(), KEY), bundle.files))
    assert caught.value.as_report()["category"] == "load"


def test_a_module_whose_sample_fails_does_not_pass_its_health_check(tmp_path):
    bundle = make_bundle(KEY, sample=True, entry="def run(inputs):\n    raise RuntimeError('sensor offline')\n")
    with pytest.raises(HealthCheckError, match="sensor offline"):
        load(tmp_path, bundle)


def test_in_process_scores_count_requests_and_errors_in_the_stats(tmp_path):
    runtime, loaded = load(tmp_path, make_bundle(KEY))
    for _ in range(5):
        loaded.score({"x": np.ones((1, 4), np.float32)})
    with pytest.raises(InferenceError):
        loaded.score({"x": np.ones((1, 5), np.float32)})
    bins, errors = loaded.stats.take()
    assert (sum(n for _, n in bins), errors) == (5, 1)
    assert loaded.stats.take() == ([], 0)


def test_a_missing_input_is_refused_naming_the_input_and_what_the_module_expects(tmp_path):
    _, loaded = load(tmp_path, make_bundle(KEY, module="linear"))
    with pytest.raises(InferenceError) as refused:
        loaded.score({})
    assert str(refused.value) == "linear v1: input 'x': missing; the module expects FP32 [-1, 4]"


def test_a_module_whose_fallback_policy_is_misspelt_fails_to_install_with_bad_fallback_policy(tmp_path):
    with pytest.raises(LoadError) as refused:
        load(tmp_path, make_bundle(KEY, module="linear", config={"fallback": {"max_bach": 64}}))
    assert refused.value.code == "bad_fallback_policy"
    assert "'max_bach'" in str(refused.value) and "'max_batch'" in str(refused.value)


def test_the_iris_module_takes_a_label_as_its_class_name_or_index_and_a_duplicate_answers_what_was_stored(tmp_path):
    from edge_agent.feedback_route import FeedbackRoute
    from edge_agent.outbox import Outbox

    runtime, loaded = load(tmp_path / "modules", module_bundle(MODULES / "iris-classifier"))
    runtime.activate(loaded)
    module = runtime.table["iris-classifier"]
    rows = np.array([[5.1, 3.5, 1.4, 0.2], [7.7, 3.0, 6.1, 2.3]], np.float32)  # setosa, virginica
    result = module.score({"float_input": rows})
    outbox = Outbox(tmp_path / "outbox.db")
    route = FeedbackRoute.create(max_requests=10, max_rows=100, outbox=outbox)
    route.scored(module, result, result.outputs, "local", "order-1")
    status, first = route.post("iris-classifier", {"id": "order-1", "labels": ["setosa", "virginica"]})
    assert (status, first["correct"], first["duplicate"]) == (200, 2, False)
    status, again = route.post("iris-classifier", {"id": "order-1", "labels": [1, 1]})
    assert (status, again["correct"], again["duplicate"]) == (200, 2, True)
    status, refused = route.post("iris-classifier", {"id": "order-1", "labels": ["setosa", "Virginica"]})
    assert status == 400 and "0 = setosa, 1 = versicolor, 2 = virginica" in refused["error"]
