"""The local Open Inference Protocol v2 endpoint: routes, metadata, and errors with the right status."""

from __future__ import annotations

import http.client
import json
import socket

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from edge_agent.scoring_api import ScoringServer
from fleet_server.keys import new_signing_key
from tests.agent.helpers import make_bundle, serving_runtime
from tests.support.entry_scripts import entry_script

MAX_BYTES = 4096


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    state = tmp_path_factory.mktemp("state")
    bundle = make_bundle(new_signing_key(), version=3)
    runtime = serving_runtime(state, bundle)
    server = ScoringServer(host="127.0.0.1", port=0, table=runtime.table, ready=lambda: True,
                           max_request_bytes=MAX_BYTES)
    server.start()
    host, port = server.address
    yield f"http://{host}:{port}", bundle
    server.stop()


def body(x: np.ndarray, datatype: str = "FP32", name: str = "x") -> dict:
    return {"inputs": [{"name": name, "shape": list(x.shape), "datatype": datatype, "data": x.ravel().tolist()}]}


def test_health_metadata_and_ready_routes(served):
    url, _ = served
    assert httpx.get(f"{url}/v2/health/live").status_code == 200
    assert httpx.get(f"{url}/v2/health/ready").status_code == 200
    meta = httpx.get(f"{url}/v2/models/linear").json()
    assert meta["name"] == "linear" and meta["versions"] == ["3"] and meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}]
    assert httpx.get(f"{url}/v2/models/linear/versions/3").json() == meta
    assert httpx.get(f"{url}/v2/models/linear/ready").status_code == 200
    assert httpx.get(f"{url}/v2/models/linear/versions/3/ready").status_code == 200


def test_infer_returns_what_onnxruntime_returns_with_the_version_as_a_string(served):
    url, bundle = served
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    for path in ("/v2/models/linear/infer", "/v2/models/linear/versions/3/infer"):
        response = httpx.post(url + path, json={**body(x), "id": "req-7"})
        assert response.status_code == 200, response.text
        got = response.json()
        assert (got["model_version"], got["id"]) == ("3", "req-7")
        assert got["parameters"] == {"scored_on": "local", "accelerator": "CPUExecutionProvider", "model_version": "3"}
        expected = ort.InferenceSession(bundle.files["model.onnx"]).run(None, {"x": x})[0]
        np.testing.assert_array_equal(np.asarray(got["outputs"][0]["data"], np.float32).reshape(2, 3), expected)


@pytest.mark.parametrize(("request_body", "reason"), [
    (body(np.zeros((2, 5), np.float32)), "input 'x': shape [2, 5]; the module expects FP32 [-1, 4]"),
    (body(np.zeros((2, 4), np.float64), "FP64"), "input 'x': FP64; the module expects FP32 [-1, 4]"),
    (body(np.zeros((2, 4), np.float32), name="z"), "input 'z': unknown; the module's inputs are x FP32 [-1, 4]"),
    ({"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [1, 2, 3]}]}, "needs 8 values"),
    ({"inputs": []}, "empty"),
    ({"outputs": []}, "inputs"),
    ([1, 2], "JSON object"),
])
def test_a_bad_request_gets_400_with_the_reason(served, request_body, reason):
    url, _ = served
    response = httpx.post(f"{url}/v2/models/linear/infer", json=request_body)
    assert response.status_code == 400
    assert reason in response.json()["error"]


def test_a_body_that_is_not_json_gets_400(served):
    url, _ = served
    response = httpx.post(f"{url}/v2/models/linear/infer", content=b"{not json")
    assert response.status_code == 400 and "JSON" in response.json()["error"]


@pytest.mark.parametrize("path", ["/v2/models/nope/infer", "/v2/models/linear/versions/2/infer",
                                  "/v2/models/linear/versions/x/infer"])
def test_an_unknown_model_or_version_gets_404(served, path):
    url, _ = served
    response = httpx.post(url + path, json=body(np.zeros((1, 4), np.float32)))
    assert response.status_code == 404 and "error" in response.json()
    assert httpx.get(f"{url}/v2/models/nope").status_code == 404
    assert httpx.get(f"{url}/v2/models/nope/ready").status_code == 404
    assert httpx.get(f"{url}/v3/anything").status_code == 404


def test_a_body_over_the_limit_gets_413(served):
    url, _ = served
    response = httpx.post(f"{url}/v2/models/linear/infer", content=b" " * (MAX_BYTES + 1))
    assert response.status_code == 413 and str(MAX_BYTES) in response.json()["error"]


def test_a_wrong_method_gets_405(served):
    url, _ = served
    assert httpx.get(f"{url}/v2/models/linear/infer").status_code == 405
    assert httpx.post(f"{url}/v2/models/linear", json={}).status_code == 405
    assert httpx.delete(f"{url}/v2/health/live").status_code == 405


def test_one_keep_alive_connection_serves_many_requests_including_errors(served):
    url, _ = served
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    payload = json.dumps(body(np.ones((1, 4), np.float32))).encode()
    for path, expected in [("/v2/models/linear/infer", 200), ("/v2/models/nope/infer", 404),
                           ("/v2/models/linear/infer", 200)]:
        connection.request("POST", path, body=payload, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        assert response.status == expected
        assert response.getheader("Connection") != "close"
    connection.close()


def _raw(url: str, head: bytes, body: bytes = b"") -> bytes:
    """Send ``head`` + ``body`` on a fresh socket and return what comes back before the server closes or idles."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(head + body)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("bad_line", [b" folded: continuation\r\n", b"NoColonHere\r\n", b"Spaced : value\r\n",
                                      b"Content-Length: 7\r\n"])
def test_a_malformed_or_ambiguous_request_head_gets_400(served, bad_line):
    url, _ = served
    payload = json.dumps(body(np.ones((1, 4), np.float32))).encode()
    head = (b"POST /v2/models/linear/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(payload)).encode() + b"\r\n" + bad_line + b"\r\n")
    assert _raw(url, head, payload).startswith(b"HTTP/1.1 400 ")


def test_a_well_formed_head_in_any_header_case_is_served_in_one_response(served):
    url, _ = served
    payload = json.dumps(body(np.ones((1, 4), np.float32))).encode()
    head = (b"POST /v2/models/linear/infer HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"CONTENT-LENGTH: " + str(len(payload)).encode() + b"\r\nConnection: close\r\n\r\n")
    response = _raw(url, head, payload)
    status, _, rest = response.partition(b"\r\n")
    headers, _, data = rest.partition(b"\r\n\r\n")
    assert status == b"HTTP/1.1 200 OK"
    assert b"Connection: close" in headers and b"Date: " in headers
    assert json.loads(data)["model_name"] == "linear"


def test_too_many_header_lines_get_431(served):
    url, _ = served
    head = b"GET /v2/health/live HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(101)) + b"\r\n"
    assert _raw(url, head).startswith(b"HTTP/1.1 431 ")


ENTRY = entry_script('''
    x = inputs["x"]
    if float(x[0, 0]) == -1:
        raise RuntimeError("the module's own bug")
    if float(x[0, 0]) == -2:
        raise MemoryError("no memory left for now")
    return _model.run({"x": x})
''')


@pytest.fixture(scope="module")
def served_entry(tmp_path_factory):
    state = tmp_path_factory.mktemp("state-entry")
    bundle = make_bundle(new_signing_key(), module="scripted", entry=ENTRY)
    runtime = serving_runtime(state, bundle)
    server = ScoringServer(host="127.0.0.1", port=0, table=runtime.table, ready=lambda: True)
    server.start()
    host, port = server.address
    yield f"http://{host}:{port}/v2/models/scripted/infer"
    server.stop()


def test_a_module_that_fails_on_inputs_that_fit_answers_500_so_clients_retry(served_entry):
    response = httpx.post(served_entry, json=body(np.full((1, 4), -1, np.float32)))
    assert response.status_code == 500
    assert response.json()["error"] == "scripted v1 failed: RuntimeError: the module's own bug"
    busy = httpx.post(served_entry, json=body(np.full((1, 4), -2, np.float32)))
    assert busy.status_code == 503 and busy.headers["Retry-After"] == "1", "temporary: retry soon"
    assert httpx.post(served_entry, json=body(np.ones((1, 4), np.float32))).status_code == 200


def test_a_client_input_an_entry_script_cannot_read_is_400_naming_the_input_and_the_expectation(served_entry):
    response = httpx.post(served_entry, json=body(np.ones((1, 4), np.float32), name="features"))
    assert response.status_code == 400
    assert response.json()["error"] == "scripted v1: input 'features': unknown; the module's inputs are x FP32 [-1, 4]"
    wrong = httpx.post(served_entry, json=body(np.ones((1, 3), np.float32)))
    assert wrong.status_code == 400 and "input 'x': shape [1, 3]; the module expects FP32 [-1, 4]" in wrong.text


@pytest.mark.parametrize("shape", [[0, 2**70], [0, 2**62, 2**62]])
def test_a_tensor_shape_past_the_element_bound_gets_400_naming_the_input(served, shape):
    url, _ = served
    response = httpx.post(f"{url}/v2/models/linear/infer",
                          json={"inputs": [{"name": "x", "shape": shape, "datatype": "FP32", "data": []}]})
    assert response.status_code == 400, response.text
    assert "input 'x': shape" in response.json()["error"]
