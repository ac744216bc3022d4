"""gRPC and binary tensor data across a real fleet: Triton's clients against agent and server, fallback over gRPC."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from fleet_protocol import oip
from tests.offline.fleet import TOKEN, running_fleet
from tests.support.net import free_port

IRIS = Path(__file__).resolve().parents[2] / "modules" / "iris-classifier"
SAMPLE = json.loads((IRIS / "sample.json").read_text())
AUTH = {"authorization": f"Bearer {TOKEN}"}
X = np.arange(8, dtype=np.float32).reshape(2, 4)


def grpc_infer(address: str, model: str, x: np.ndarray, headers: dict | None = None):
    client = triton_grpc.InferenceServerClient(url=address)
    tensor = triton_grpc.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    try:
        return client.infer(model, [tensor], headers=headers)
    finally:
        client.close()


def test_triton_grpc_and_binary_http_clients_get_the_same_answers_from_agent_and_server(tmp_path, monkeypatch):
    with running_fleet(tmp_path, monkeypatch, grpc_port=free_port()) as fleet:
        agent = fleet.start_agent(tmp_path, grpc_port=0)
        fleet.deploy("scaler", {})
        ends = ((agent.grpc.address, agent.scoring_url, None, "local"),
                (fleet.server.grpc.address, fleet.url, AUTH, "cloud"))
        for grpc_address, rest_url, headers, scored_on in ends:
            client = triton_grpc.InferenceServerClient(url=grpc_address)
            assert client.is_server_live() and client.is_server_ready()
            assert client.is_model_ready("scaler", headers=headers)
            assert client.get_model_metadata("scaler", headers=headers, as_json=True)["inputs"][0]["name"] == "x"
            result = grpc_infer(grpc_address, "scaler", X, headers)
            assert np.allclose(result.as_numpy("y"), X * 2)
            assert result.get_response(as_json=True)["parameters"]["scored_on"]["string_param"] == scored_on
            grpc_extensions = client.get_server_metadata(headers=headers, as_json=True).get("extensions", [])
            client.close()

            rest = triton_http.InferenceServerClient(url=rest_url.removeprefix("http://"))
            extensions = rest.get_server_metadata(headers=headers)["extensions"]
            assert "binary_tensor_data" in extensions
            assert grpc_extensions == extensions, "one server, one list of extensions over REST and gRPC"
            tensor = triton_http.InferInput("x", [2, 4], "FP32")
            tensor.set_data_from_numpy(X, binary_data=True)
            binary = rest.infer("scaler", [tensor], outputs=[triton_http.InferRequestedOutput("y", binary_data=True)],
                                headers=dict(headers or {}))  # a copy: tritonclient.http adds its own headers
            assert np.allclose(binary.as_numpy("y"), X * 2)
            assert binary.get_output("y")["parameters"]["binary_data_size"] == 32
            rest.close()

        server = fleet.server.grpc.address
        for headers, status in ((None, "UNAUTHENTICATED"), ({"authorization": "Bearer wrong"}, "UNAUTHENTICATED")):
            with pytest.raises(InferenceServerException) as refused:
                grpc_infer(server, "scaler", X, headers)
            assert refused.value.status() == f"StatusCode.{status}" and "token" in refused.value.message()
        client = triton_grpc.InferenceServerClient(url=server)  # every RPC that REST guards needs the token too
        for ask in (client.get_server_metadata, lambda: client.get_model_metadata("scaler"),
                    lambda: client.is_model_ready("scaler"),
                    lambda: client.get_model_metadata("scaler", headers={"authorization": f"Basic {TOKEN}"})):
            with pytest.raises(InferenceServerException) as refused:
                ask()
            assert refused.value.status() == "StatusCode.UNAUTHENTICATED", refused.value
        assert client.is_server_live() and client.is_server_ready(), "as GET /v2/health/*: no token needed"
        client.close()
        with pytest.raises(InferenceServerException) as unknown:
            grpc_infer(server, "nowhere", X, AUTH)
        assert unknown.value.status() == "StatusCode.NOT_FOUND" and "nowhere" in unknown.value.message()
        with pytest.raises(InferenceServerException) as bad:
            grpc_infer(server, "scaler", np.ones((2, 3), np.float32), AUTH)
        assert bad.value.status() == "StatusCode.INVALID_ARGUMENT" and "input 'x'" in bad.value.message()


def test_fallback_over_grpc_runs_the_module_in_the_cloud_bytes_outputs_and_all(tmp_path, monkeypatch):
    port = free_port()
    with running_fleet(tmp_path, monkeypatch, grpc_port=port) as fleet:
        agent = fleet.start_agent(tmp_path, cloud_url=f"grpc://127.0.0.1:{port}", cloud_retries=0, grpc_port=0)
        fleet.api.post("/api/models/iris-forest", files={"file": ("m.onnx", (IRIS / "model.onnx").read_bytes())})
        fleet.deploy_module(IRIS)
        url = f"{agent.scoring_url}/v2/models/iris-classifier/infer"
        local = httpx.post(url, json=SAMPLE, timeout=30).json()
        cloud = httpx.post(url, json={**SAMPLE, "parameters": {"prefer": "cloud"}}, timeout=30).json()
        assert (cloud["parameters"]["scored_on"], cloud["parameters"]["fallback_reason"]) == \
            ("cloud", "caller_prefers_cloud"), cloud
        assert cloud["model_name"] == "iris-classifier" and cloud["model_version"] == "1"
        local_out, cloud_out = oip.decode_response(local), oip.decode_response(cloud)
        assert list(cloud_out["class_name"]) == list(local_out["class_name"])  # BYTES, through raw contents
        np.testing.assert_allclose(cloud_out["probabilities"], local_out["probabilities"], rtol=1e-6)

        client = triton_grpc.InferenceServerClient(url=agent.grpc.address)  # gRPC in, gRPC out to the cloud
        tensor = triton_grpc.InferInput("float_input", SAMPLE["inputs"][0]["shape"], "FP32")
        tensor.set_data_from_numpy(oip.decode_request(SAMPLE).inputs["float_input"])
        both_ways = client.infer("iris-classifier", [tensor], parameters={"prefer": "cloud"})
        assert both_ways.get_response(as_json=True)["parameters"]["scored_on"]["string_param"] == "cloud"
        assert [v.decode() for v in both_ways.as_numpy("class_name")] == list(local_out["class_name"])
        client.close()

        rest = triton_http.InferenceServerClient(url=agent.scoring_url.removeprefix("http://"))
        inputs = []
        for raw in SAMPLE["inputs"]:
            tensor = triton_http.InferInput(raw["name"], raw["shape"], raw["datatype"])
            tensor.set_data_from_numpy(oip.decode_tensor(raw, "input")[1], binary_data=True)
            inputs.append(tensor)
        binary = rest.infer("iris-classifier", inputs, parameters={"prefer": "cloud"})
        assert binary.get_response()["parameters"]["scored_on"] == "cloud"
        assert [v.decode() for v in binary.as_numpy("class_name")] == list(local_out["class_name"])
        rest.close()

        fleet.api.post("/api/models/cloud-only", files={"file": ("m.onnx", (IRIS / "model.onnx").read_bytes())})
        elsewhere = agent.infer_with_fallback("cloud-only", oip.decode_request(SAMPLE).inputs)
        assert (elsewhere.scored_on, elsewhere.fallback_reason) == ("cloud", "not_installed")

        fleet.stop_server()
        down = httpx.post(url, json={**SAMPLE, "parameters": {"prefer": "cloud"}}, timeout=30).json()
        assert down["parameters"]["scored_on"] == "local", "an unreachable gRPC cloud is a transport failure"
        refused = httpx.post(f"{agent.scoring_url}/v2/models/cloud-only/infer", json=SAMPLE, timeout=30)
        assert refused.status_code == 503 and refused.headers["Retry-After"]
        assert f"grpc://127.0.0.1:{port} is unreachable: UNAVAILABLE" in refused.json()["error"]
