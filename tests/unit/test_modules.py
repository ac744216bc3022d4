"""The example modules: valid module.json, bundle-buildable, samples run, outputs match their references."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import pytest

from fleet_protocol import bundle_file, oip
from fleet_protocol.canonical import canonical_json
from fleet_protocol.fields import is_valid_name
from fleet_protocol.manifest import RUNTIMES, check_relative_path
from fleet_server.keys import new_signing_key
from fleet_server.modelinfo import inspect_model
from fleet_server.module_archive import parse_module_spec

MODULES = Path(__file__).resolve().parents[2] / "modules"
IRIS = MODULES / "iris-classifier"
SENSOR = MODULES / "sensor-anomaly"
REQUIRED_KEYS = {"name", "description", "runtime", "model", "entry", "sample", "files", "target_profiles", "config",
                 "signature"}


def load_script(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def spec_of(folder: Path) -> dict:
    return json.loads((folder / "module.json").read_text())


def sample_inputs(folder: Path) -> dict[str, np.ndarray]:
    return oip.decode_request(json.loads((folder / spec_of(folder)["sample"]).read_text())).inputs


class OnnxModel:
    """What the agent hands entry scripts as ``context.model``, over onnxruntime."""

    def __init__(self, path: Path):
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.inputs = [(i.name, i.type, i.shape) for i in self.session.get_inputs()]
        self.outputs = [(o.name, o.type, o.shape) for o in self.session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o[0] for o in self.outputs]
        return dict(zip(names, self.session.run(names, feeds)))


class TfliteModel:
    """The same over a LiteRT interpreter."""

    def __init__(self, path: Path):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path))
        self.interpreter.allocate_tensors()
        self.inputs = [(d["name"], str(d["dtype"]), list(d["shape"])) for d in self.interpreter.get_input_details()]
        self.outputs = [(d["name"], str(d["dtype"]), list(d["shape"])) for d in self.interpreter.get_output_details()]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for detail in self.interpreter.get_input_details():
            self.interpreter.set_tensor(detail["index"], feeds[detail["name"]])
        self.interpreter.invoke()
        return {d["name"]: self.interpreter.get_tensor(d["index"]).copy()
                for d in self.interpreter.get_output_details()}


def start_entry(folder: Path, model) -> ModuleType:
    spec = spec_of(folder)
    entry = load_script(folder / spec["entry"], f"entry_{spec['name'].replace('-', '_')}")
    context = SimpleNamespace(model=model, module_dir=folder, config=dict(spec["config"]),
                              log=logging.getLogger(f"test.{spec['name']}"))
    if hasattr(entry, "init"):
        entry.init(context)
    return entry


@pytest.mark.parametrize("folder", [IRIS, SENSOR], ids=lambda p: p.name)
def test_module_json_is_valid_and_builds_a_verifiable_bundle(folder: Path):
    spec = spec_of(folder)
    assert set(spec) == REQUIRED_KEYS
    parsed = parse_module_spec((folder / "module.json").read_bytes())  # the build's own checks, typos included
    assert spec["name"] == folder.name and is_valid_name(spec["name"])
    assert spec["runtime"] in RUNTIMES
    assert isinstance(spec["description"], str) and spec["description"]
    assert isinstance(spec["target_profiles"], list) and isinstance(spec["config"], dict)
    canonical_json(spec["config"])  # the config is signed: no floats
    for role in ("model", "entry", "sample"):
        assert spec[role] in spec["files"], f"{role} {spec[role]} is not listed in files"
    assert len(set(spec["files"])) == len(spec["files"])
    files = {}
    for name in spec["files"]:
        check_relative_path(name)
        assert (folder / name).is_file(), f"{name} is listed but missing"
        files[name] = (folder / name).read_bytes()
    assert (folder / "README.md").is_file() and (folder / "build_model.py").is_file()

    manifest = bundle_file.build_manifest(
        module=spec["name"], version=1, runtime=spec["runtime"], model=spec["model"], files=files,
        created="2026-01-01T00:00:00Z", entry=spec["entry"], sample=spec["sample"],
        target_profiles=tuple(spec["target_profiles"]), description=spec["description"], config=spec["config"],
        signature=parsed.signature)
    key = new_signing_key()
    _, packed = bundle_file.pack_bundle(manifest, files, key)
    _, read_back, read_files = bundle_file.read_bundle(packed, [key.public_key])
    assert read_back.digest == manifest.digest and read_files == files
    assert read_back.signature == parsed.signature


@pytest.mark.parametrize("folder", [IRIS, SENSOR], ids=lambda p: p.name)
def test_each_example_module_declares_what_its_entry_script_returns(folder: Path):
    spec = parse_module_spec((folder / "module.json").read_bytes())
    model = OnnxModel(folder / spec.model) if spec.runtime == "onnx" else TfliteModel(folder / spec.model)
    outputs = start_entry(folder, model).run(sample_inputs(folder))
    body = oip.encode_response(spec.name, "1", outputs)
    assert [(t["name"], t["datatype"]) for t in body["outputs"]] == \
        [(t.name, t.datatype) for t in spec.signature.outputs]
    assert spec.signature.output_problem(outputs) is None


# --- iris-classifier --------------------------------------------------------------------------


def test_iris_sample_runs_through_the_model_and_the_entry_script():
    model = OnnxModel(IRIS / "model.onnx")
    assert model.inputs == [("float_input", "tensor(float)", [None, 4])]
    assert [o[:2] for o in model.outputs] == [("label", "tensor(int64)"), ("probabilities", "tensor(float)")]
    inputs = sample_inputs(IRIS)
    raw = model.run(inputs)
    entry = start_entry(IRIS, model)
    outputs = entry.run(inputs)
    np.testing.assert_array_equal(outputs["label"], [0, 1, 2])
    np.testing.assert_array_equal(outputs["label"], raw["label"])
    np.testing.assert_allclose(outputs["probabilities"], raw["probabilities"])
    np.testing.assert_allclose(outputs["probabilities"].sum(axis=1), 1.0, rtol=1e-5)
    assert outputs["class_name"].tolist() == ["setosa", "versicolor", "virginica"]
    body = oip.encode_response("iris-classifier", "1", outputs)  # every output has an OIP datatype
    assert {t["name"]: t["datatype"] for t in body["outputs"]} == {
        "label": "INT64", "probabilities": "FP32", "class_name": "BYTES"}


def test_iris_onnx_predictions_match_scikit_learn_on_the_whole_data_set():
    from sklearn.datasets import load_iris

    build = load_script(IRIS / "build_model.py", "iris_build_model")
    forest = build.train()
    x = load_iris().data.astype(np.float32)
    got = OnnxModel(IRIS / "model.onnx").run({"float_input": x})
    np.testing.assert_array_equal(got["label"], forest.predict(x))
    np.testing.assert_allclose(got["probabilities"], forest.predict_proba(x), atol=1e-5)


# --- sensor-anomaly ---------------------------------------------------------------------------


def sensor_build() -> ModuleType:
    return load_script(SENSOR / "build_model.py", "sensor_build_model")


def test_sensor_tflite_output_equals_the_numpy_network():
    build = sensor_build()
    data = (SENSOR / "model.tflite").read_bytes()
    weights = build.read_weights(data)
    assert {k: v.shape for k, v in weights.items()} == {
        "dense_1/weights": (16, 8), "dense_1/bias": (16,), "dense_2/weights": (1, 16), "dense_2/bias": (1,)}
    model = TfliteModel(SENSOR / "model.tflite")
    assert model.inputs == [("sensor_readings", "<class 'numpy.float32'>", [1, 8])]
    assert model.outputs == [("anomaly_score", "<class 'numpy.float32'>", [1, 1])]
    readings, labels = build.make_data(np.random.default_rng(7), 300)
    scores = np.array([model.run({"sensor_readings": row[None, :]})["anomaly_score"][0, 0] for row in readings])
    # float32 in both, summed in different orders: equal to float32 rounding
    np.testing.assert_allclose(scores, build.forward(weights, readings)[:, 0], rtol=1e-4, atol=3e-5)
    assert ((scores > 0.5) == (labels > 0.5)).mean() > 0.95  # and it does detect the synthetic faults


def test_sensor_model_file_is_what_the_writer_produces_from_its_weights():
    build = sensor_build()
    data = (SENSOR / "model.tflite").read_bytes()
    assert data[4:8] == b"TFL3"
    assert build.build_tflite(build.read_weights(data)) == data


def test_sensor_sample_runs_through_the_model_and_the_entry_script():
    build = sensor_build()
    model = TfliteModel(SENSOR / "model.tflite")
    inputs = sample_inputs(SENSOR)
    entry = start_entry(SENSOR, model)
    outputs = entry.run(inputs)
    expected = build.forward(build.read_weights((SENSOR / "model.tflite").read_bytes()), inputs["sensor_readings"])
    np.testing.assert_allclose(outputs["anomaly_score"], expected, rtol=1e-4, atol=3e-5)
    assert outputs["anomaly_score"].shape == (1, 1) and outputs["anomaly_score"][0, 0] < 0.1
    assert outputs["is_anomaly"].tolist() == [[False]]

    overheating = np.array([[80.0, 22.0, 2.0, 5.0, 12.0, 400.0, 1480.0, 70.0],
                            [55.0, 22.0, 2.0, 5.0, 12.0, 400.0, 1480.0, 70.0]], dtype=np.float32)
    batch = entry.run({"sensor_readings": overheating})  # a batch is scored row by row
    assert batch["anomaly_score"].shape == (2, 1)
    assert batch["is_anomaly"].tolist() == [[True], [False]]
    body = oip.encode_response("sensor-anomaly", "1", batch)
    assert {t["name"]: t["datatype"] for t in body["outputs"]} == {"anomaly_score": "FP32", "is_anomaly": "BOOL"}
    with pytest.raises(ValueError, match="shape"):
        entry.run({"sensor_readings": np.zeros((1, 7), dtype=np.float32)})
