"""A joint-inference policy is checked where the bundle is built: the cloud model must exist and fit the module."""

from __future__ import annotations

import json

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
