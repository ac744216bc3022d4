"""A joint-inference policy is checked where the bundle is built: the cloud model must exist and fit the module."""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper

from tests.server.builders import tar_gz, tiny_onnx
from tests.server.conftest import register
from tests.support.classifiers import disagreeing

JOINT = {"answers": {"probability_output": "probabilities"},
         "fallback": {"confidence_below": "0.6", "cloud_model": "forest"}}


def build(api, config: dict):
    return api.post("/api/bundles/from-model", json={"model": "regression", "config": config})


def test_a_cloud_model_that_is_not_registered_is_refused_at_build_with_the_nearest_name(api):
    register(api, "regression", disagreeing().small_onnx)
    register(api, "forrest", disagreeing().big_onnx)
    response = build(api, JOINT)
    assert response.status_code == 400, response.text
    assert "cloud model 'forest' is not a registered model (did you mean 'forrest'?" in response.text
    register(api, "forest", disagreeing().big_onnx)
    assert build(api, JOINT).status_code == 201


def test_a_cloud_model_without_the_module_outputs_is_refused_at_build_naming_what_it_has(api):
    register(api, "regression", disagreeing().small_onnx)
    register(api, "forest", tiny_onnx(inputs=12))  # input x, output y: cannot stand in for label/probabilities
    response = build(api, JOINT)
    assert response.status_code == 400, response.text
    assert "cloud model forest:1 cannot answer for this module: it has no FP32 input 'X'" in response.text


def test_a_module_archive_with_a_float_threshold_is_refused_before_anything_is_signed(api):
    register(api, "forest", disagreeing().big_onnx)
    spec = {"name": "regression", "runtime": "onnx", "model": "model.onnx", "files": ["model.onnx"],
            "config": {**JOINT, "fallback": {"confidence_below": 0.6, "cloud_model": "forest"}}}
    archive = tar_gz({"module.json": json.dumps(spec).encode(), "model.onnx": disagreeing().small_onnx})
    response = api.post("/api/bundles/from-module", files={"file": ("m.tar.gz", archive)})
    assert response.status_code == 400, response.text
    assert 'write it as the string "0.6"' in str(response.json())
    assert api.get("/api/bundles").json() == []


def classifier_onnx(features: int, *, extra_input: bool = False) -> bytes:
    """``probabilities = softmax(X @ W [+ Z])``, ``label = argmax``: the outputs of the device's regression."""
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", features])]
    nodes = [helper.make_node("MatMul", ["X", "W"], ["logits"])]
    if extra_input:  # a feature the device never sends
        inputs.append(helper.make_tensor_value_info("Z", TensorProto.FLOAT, ["N", 1]))
        nodes = [helper.make_node("MatMul", ["X", "W"], ["xw"]), helper.make_node("Add", ["xw", "Z"], ["logits"])]
    nodes += [helper.make_node("Softmax", ["logits"], ["probabilities"]),
              helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0)]
    weights = helper.make_tensor("W", TensorProto.FLOAT, [features, 3], np.ones(features * 3, np.float32))
    graph = helper.make_graph(nodes, "classifier", inputs, [
        helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
        helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 3])], [weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def test_a_cloud_model_that_needs_other_features_or_an_input_the_device_never_sends_is_refused_at_build(api):
    register(api, "regression", disagreeing().small_onnx)  # X: FP32 [-1, 12]
    register(api, "forest", classifier_onnx(10))
    response = build(api, JOINT)
    assert response.status_code == 400, response.text
    assert "it has no FP32 input 'X' [-1, 12] (its inputs: X FP32 [-1, 10])" in response.text
    register(api, "forest", classifier_onnx(12, extra_input=True))
    response = build(api, JOINT)
    assert response.status_code == 400, response.text
    assert "it needs an input Z FP32 [-1, 1] that the module's requests do not have" in response.text
    register(api, "forest", classifier_onnx(12))
    assert build(api, JOINT).status_code == 201, "the same inputs and outputs: it can stand in"
