"""The fleet server scores every registered model version at the Open Inference Protocol v2 routes."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
from fastapi.testclient import TestClient

from fleet_protocol import oip
from tests.server.builders import tiny_onnx, tiny_tflite
from tests.server.conftest import register
from tests.support.entry_scripts import entry_script


def _infer(api: TestClient, path: str, x: np.ndarray, **kwargs):
    return api.post(f"/v2/models/{path}/infer", json=oip.encode_request({"x": x}), **kwargs)


def test_registered_onnx_model_is_scored_with_where_and_which_version(api):
    register(api, "scaler", tiny_onnx(2.0))
    register(api, "scaler", tiny_onnx(3.0))
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    latest = _infer(api, "scaler", x)
    assert latest.status_code == 200, latest.text
    body = latest.json()
    assert np.allclose(oip.decode_response(body)["y"], x * 3)
    assert body["parameters"] == {"scored_on": "cloud", "accelerator": "CPUExecutionProvider", "model_version": "2"}
    first = _infer(api, "scaler/versions/1", x).json()
    assert np.allclose(oip.decode_response(first)["y"], x * 2) and first["model_version"] == "1"


def test_tflite_model_is_scored_in_any_batch_size(api):
    register(api, "adder", tiny_tflite())
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    response = _infer(api, "adder", x)
    assert response.status_code == 200, response.text
    assert np.allclose(oip.decode_response(response.json())["y"], x + x)


def test_metadata_and_readiness_follow_the_registry(api):
    register(api, "scaler", tiny_onnx())
    meta = api.get("/v2/models/scaler").json()
    assert meta["versions"] == ["1"] and meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert api.get("/v2/models/scaler/versions/1/ready").json()["ready"] is True
    assert api.get("/v2/health/ready").json() == {"ready": True}


def test_unknown_model_or_version_is_404_with_an_error(api):
    register(api, "scaler", tiny_onnx())
    x = np.ones((1, 4), np.float32)
    for path in ("nothing", "scaler/versions/9", "scaler/versions/abc"):
        response = _infer(api, path, x)
        assert response.status_code == 404 and "error" in response.json(), response.text


def test_bad_input_is_400_with_the_reason(api):
    register(api, "scaler", tiny_onnx())
    wrong_shape = _infer(api, "scaler", np.ones((1, 3), np.float32))
    assert wrong_shape.status_code == 400 and "shape" in wrong_shape.json()["error"]
    wrong_type = api.post("/v2/models/scaler/infer", json=oip.encode_request({"x": np.ones((1, 4), np.int64)}))
    assert wrong_type.status_code == 400 and "FP32" in wrong_type.json()["error"]
    not_json = api.post("/v2/models/scaler/infer", content=b"{nope")
    assert not_json.status_code == 400 and "JSON" in not_json.json()["error"]


def test_scoring_needs_a_token_and_says_so_as_an_error(api):
    register(api, "scaler", tiny_onnx())
    response = _infer(api, "scaler", np.ones((1, 4), np.float32), headers={"Authorization": "Bearer wrong"})
    assert response.status_code == 401 and "token" in response.json()["error"]


def test_loaded_models_are_bounded_least_recently_used_first(api, fleet):
    fleet.cloud.max_loaded = 2
    for name in ("a", "b", "c"):
        register(api, name, tiny_onnx())
    x = np.ones((1, 4), np.float32)
    for name in ("a", "b", "a", "c"):
        assert _infer(api, name, x).status_code == 200
    assert fleet.cloud.loaded == [("a", 1), ("c", 1)]


FAILS_ON_NEGATIVE = entry_script('''
    if float(inputs["x"][0, 0]) < 0:
        raise RuntimeError("this module cannot score negative readings")
    outputs = dict(_model.run(inputs))
    outputs["doubled"] = outputs["y"] * 2
    return outputs
''')


def test_a_module_bundle_is_scored_with_its_entry_script_and_its_failures_are_500(api, fleet):
    register(api, "scaler", tiny_onnx(2.0))
    built = api.post("/api/bundles/from-model", json={"model": "scaler", "module": "scripted",
                                                      "entry_script": FAILS_ON_NEGATIVE})
    assert built.status_code in (200, 201), built.text
    x = np.ones((2, 4), np.float32)
    scored = api.post("/v2/modules/scripted/versions/1/infer", json=oip.encode_request({"x": x}))
    assert scored.status_code == 200, scored.text
    body = scored.json()
    assert (body["model_name"], body["model_version"], body["parameters"]["scored_on"]) == ("scripted", "1", "cloud")
    assert np.allclose(oip.decode_response(body)["doubled"], x * 4), "the entry script ran"
    assert api.get("/v2/modules/scripted/versions/1").json()["inputs"][0]["name"] == "x"

    failed = api.post("/v2/modules/scripted/versions/1/infer", json=oip.encode_request({"x": -x}))
    assert failed.status_code == 500
    assert failed.json()["error"] == "scripted v1 failed: RuntimeError: this module cannot score negative readings"
    refused = api.post("/v2/modules/scripted/versions/1/infer", json=oip.encode_request({"z": x}))
    assert refused.status_code == 400
    assert refused.json()["error"] == "scripted v1: input 'z': unknown; the module's inputs are x FP32 [-1, 4]"
    for path in ("scripted/versions/2", "scripted/versions/x", "nothing/versions/1"):
        assert api.post(f"/v2/modules/{path}/infer", json=oip.encode_request({"x": x})).status_code == 404

    (unpacked,) = (fleet.config.data_dir / "cloud-modules").iterdir()
    assert (unpacked / "main.py").is_file()
    fleet.cloud.max_loaded = 1
    assert _infer(api, "scaler", x).status_code == 200
    assert fleet.cloud.loaded == [("scaler", 1)] and not unpacked.exists(), "an evicted module's files go too"


def test_a_non_ascii_digit_content_length_is_not_taken_for_a_number(api):
    """'²'.isdigit() is True but int('²') fails: the declared length is ignored and the body read is what counts.

    Sent through httpx's ASGI transport, which passes header bytes as they are (TestClient re-encodes them as
    UTF-8, so b'\\xb2' would arrive as 'Â²' and never reach the check)."""
    register(api, "scaler", tiny_onnx())
    x = np.ones((1, 4), np.float32)

    async def infer() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api.app), base_url="http://test",
                                     headers=api.headers) as client:
            return await client.post("/v2/models/scaler/infer", json=oip.encode_request({"x": x}),
                                     headers={"content-length": "²".encode("latin-1")})

    response = asyncio.run(infer())
    assert response.status_code == 200, response.text
    assert np.allclose(oip.decode_response(response.json())["y"], x * 2)
