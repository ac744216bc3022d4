"""The agent's binary tensor data on REST and its gRPC endpoint, spoken to by Triton's own clients."""

from __future__ import annotations

import dataclasses
import json
import socket
import sqlite3
import sys
import threading

import grpc
import httpx
import numpy as np
import onnxruntime as ort
import psutil
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from edge_agent.agent import Agent
from edge_agent.config import AgentConfig
from edge_agent.scoring_api import ScoringServer
from edge_agent.scoring_service import AgentBackend, ScoringService
from edgefleet_runtime import grpc_extra
from edgefleet_runtime.grpc_api import GrpcServer
from fleet_protocol import oip, oip_grpc
from fleet_server.keys import new_signing_key
from tests.agent.helpers import make_bundle, serving_runtime

MAX_BYTES = 65_536


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The REST endpoint and the gRPC one over one serving table, as the agent runs them."""
    state = tmp_path_factory.mktemp("state")
    bundle = make_bundle(new_signing_key(), version=3)
    runtime = serving_runtime(state, bundle)
    rest = ScoringServer(host="127.0.0.1", port=0, table=runtime.table, ready=lambda: True,
                         max_request_bytes=MAX_BYTES)
    grpc_server = GrpcServer(AgentBackend(rest.service), host="127.0.0.1", port=0, max_request_bytes=MAX_BYTES)
    rest.start()
    grpc_server.start()
    host, port = rest.address
    expected = ort.InferenceSession(bundle.files["model.onnx"])
    yield f"{host}:{port}", grpc_server.address, expected
    grpc_server.stop()
    rest.stop()


X = np.arange(8, dtype=np.float32).reshape(2, 4)


def test_server_metadata_announces_binary_tensor_data(served):
    rest, _, _ = served
    assert httpx.get(f"http://{rest}/v2").json()["extensions"] == ["binary_tensor_data"]


@pytest.mark.parametrize("binary_in", [True, False])
@pytest.mark.parametrize("binary_out", [True, False])
def test_triton_http_binary_inputs_and_outputs_give_onnxruntime_answers(served, binary_in, binary_out):
    rest, _, expected = served
    client = triton_http.InferenceServerClient(url=rest)
    tensor = triton_http.InferInput("x", [2, 4], "FP32")
    tensor.set_data_from_numpy(X, binary_data=binary_in)
    result = client.infer("linear", [tensor], outputs=[triton_http.InferRequestedOutput("y", binary_data=binary_out)])
    np.testing.assert_array_equal(result.as_numpy("y"), expected.run(None, {"x": X})[0])
    output = result.get_output("y")
    assert ("binary_data_size" in output.get("parameters", {})) is binary_out
    assert "data" in output if not binary_out else "data" not in output
    assert result.get_response()["parameters"]["scored_on"] == "local"
    client.close()


def post_binary(rest: str, header: bytes, raw: bytes, length: str) -> httpx.Response:
    return httpx.post(f"http://{rest}/v2/models/linear/infer", content=header + raw,
                      headers={"Inference-Header-Content-Length": length, "Content-Type": "application/octet-stream"})


@pytest.mark.parametrize(("size", "length", "reason"), [
    (32, "999", "more than the"), (32, "abc", "decimal byte count"), (64, None, "more than the 32 bytes left"),
    (16, None, "needs 32 bytes, got 16"),
])
def test_a_lying_binary_request_gets_400_with_the_reason_and_the_connection_lives(served, size, length, reason):
    rest, _, _ = served
    header = json.dumps({"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32",
                                     "parameters": {"binary_data_size": size}}]}).encode()
    with httpx.Client() as client:
        response = client.post(f"http://{rest}/v2/models/linear/infer", content=header + X.tobytes(),
                                headers={"Inference-Header-Content-Length": length or str(len(header))})
        assert response.status_code == 400 and reason in response.json()["error"], response.text
        assert "UTF-8" not in response.json()["error"]
        assert client.get(f"http://{rest}/v2/health/live").status_code == 200


def test_triton_grpc_client_gets_live_ready_metadata_and_answers(served):
    _, address, expected = served
    client = triton_grpc.InferenceServerClient(url=address)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("linear") and client.is_model_ready("linear", "3")
    assert client.get_server_metadata(as_json=True)["name"] == "edgefleet-agent"
    meta = client.get_model_metadata("linear", as_json=True)
    assert (meta["versions"], meta["platform"]) == (["3"], "onnxruntime_onnx")
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": ["-1", "4"]}]
    tensor = triton_grpc.InferInput("x", [2, 4], "FP32")
    tensor.set_data_from_numpy(X)
    result = client.infer("linear", [tensor], request_id="req-9")
    np.testing.assert_array_equal(result.as_numpy("y"), expected.run(None, {"x": X})[0])
    response = result.get_response(as_json=True)
    assert (response["model_version"], response["id"]) == ("3", "req-9")
    assert response["parameters"]["scored_on"] == {"string_param": "local"}
    client.close()


def grpc_error(address: str, model: str, x: np.ndarray, version: str = "") -> InferenceServerException:
    client = triton_grpc.InferenceServerClient(url=address)
    tensor = triton_grpc.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    with pytest.raises(InferenceServerException) as caught:
        client.infer(model, [tensor], model_version=version)
    client.close()
    return caught.value


@pytest.mark.parametrize(("model", "version", "x", "status", "reason"), [
    ("nope", "", X, "NOT_FOUND", "unknown model 'nope'"),
    ("linear", "2", X, "NOT_FOUND", "has no version 2 (serving 3)"),
    ("linear", "", np.zeros((2, 5), np.float32), "INVALID_ARGUMENT",
     "input 'x': shape [2, 5]; the module expects FP32 [-1, 4]"),
    ("linear", "", np.zeros((4096, 4), np.float32), "RESOURCE_EXHAUSTED", "larger than max"),
])
def test_grpc_errors_carry_the_status_code_and_the_reason(served, model, version, x, status, reason):
    _, address, _ = served
    error = grpc_error(address, model, x, version)
    assert error.status() == f"StatusCode.{status}" and reason in error.message()


def test_a_grpc_port_without_the_grpc_extra_is_refused_naming_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "grpc", None)  # what an agent installed without edgefleet[grpc] sees
    monkeypatch.delitem(sys.modules, "edgefleet_runtime.grpc_api")
    with pytest.raises(grpc_extra.GrpcUnavailable, match=r"grpc_port needs gRPC .*pip install 'edgefleet\[grpc\]'"):
        grpc_extra.load("grpc_port")
    config = AgentConfig(device_id="dev-1", state_dir=tmp_path / "agent", trusted_keys=[new_signing_key()
                         .public_key.to_hex()], scoring_port=0, grpc_port=0, broker_url="mqtt://127.0.0.1:9")
    agent = Agent(config)
    with pytest.raises(ValueError, match=r"edgefleet\[grpc\]"):
        agent.start()
    assert agent.scoring is not None and agent.scoring._server.socket.fileno() == -1, "the REST port is released"

    agent = Agent(dataclasses.replace(config, grpc_port=None, cloud_url="grpc://127.0.0.1:9"))
    with pytest.raises(ValueError, match=r"cloud_url grpc://127.0.0.1:9 needs gRPC .*edgefleet\[grpc\]"):
        agent.start()
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        agent.outbox.get_meta("generation")  # the agent's database is let go, as on any refused start


def test_a_grpc_request_whose_raw_contents_lie_is_invalid_argument_with_the_reason(served):
    _, address, _ = served
    message = oip_grpc.encode_infer_request("linear", None, oip.InferenceRequest(inputs={"x": X}))
    message.raw_input_contents[0] = message.raw_input_contents[0][:-4]
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(f"/{oip_grpc.SERVICE}/ModelInfer",
                                   request_serializer=oip_grpc.ModelInferRequest.SerializeToString,
                                   response_deserializer=oip_grpc.ModelInferResponse.FromString)
        with pytest.raises(grpc.RpcError) as refused:
            call(message, timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == "input 'x': shape [2, 4] of FP32 needs 32 bytes, got 28"


def raw_exchange(rest: str, request: bytes) -> tuple[int, dict]:
    """One request over a plain socket (httpx will not send a Content-Length that lies), its status and body."""
    host, port = rest.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        reply = sock.makefile("rb").read()  # the server closes after a 413
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


@pytest.mark.parametrize(("header", "status", "reason"), [
    ("Inference-Header-Content-Length: " + "9" * 5000, 400, "is a 5000-digit number, more than the 2-byte body"),
    ("Content-Length: " + "9" * 5000, 413, "request body of a 5000-digit number of bytes is more than the 65536"),
])
def test_a_length_header_of_thousands_of_digits_is_refused_with_the_reason_not_a_500(served, header, status, reason):
    rest, _, _ = served
    lines = ["POST /v2/models/linear/infer HTTP/1.1", f"Host: {rest}", "Connection: close", header]
    if not header.startswith("Content-Length"):
        lines.append("Content-Length: 2")
    answer = raw_exchange(rest, ("\r\n".join(lines) + "\r\n\r\n{}").encode())
    assert answer[0] == status and reason in answer[1]["error"], answer


def test_a_stopped_agent_leaves_no_grpc_worker_thread_and_no_connection_to_its_grpc_cloud(served, tmp_path):
    _, cloud, _ = served  # a gRPC endpoint that serves 'linear', standing in for the fleet server's
    warm = triton_grpc.InferenceServerClient(url=cloud)
    assert warm.is_server_live()  # its worker thread starts now, not among the agent's
    warm.close()
    before = {thread.ident for thread in threading.enumerate()}
    config = AgentConfig(device_id="dev-1", state_dir=tmp_path / "agent", trusted_keys=[new_signing_key()
                         .public_key.to_hex()], scoring_port=0, grpc_port=0, broker_url="mqtt://127.0.0.1:9",
                         cloud_url=f"grpc://{cloud}", cloud_retries=0)
    agent = Agent(config)
    agent.start()
    try:
        client = triton_grpc.InferenceServerClient(url=agent.grpc.address)
        tensor = triton_grpc.InferInput("x", [2, 4], "FP32")
        tensor.set_data_from_numpy(X)
        result = client.infer("linear", [tensor])  # not installed here: the agent asks its cloud over gRPC
        assert result.get_response(as_json=True)["parameters"]["scored_on"]["string_param"] == "local"
        client.close()
        assert connections_to(cloud), "the agent's channel to the cloud is open while it runs"
    finally:
        agent.stop()
    left = [t.name for t in threading.enumerate() if t.ident not in before and t.name.startswith("oip-grpc")]
    assert left == [], "the agent's gRPC worker threads end with it"
    assert connections_to(cloud) == [], "the channel to the gRPC cloud is closed"


def connections_to(address: str) -> list:
    port = int(address.rsplit(":", 1)[1])
    return [c for c in psutil.Process().net_connections("tcp")
            if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED]


@pytest.mark.parametrize("host", ["::1", "::"])
def test_grpc_serves_on_an_ipv6_host_and_names_an_address_a_client_can_dial(host):
    server = GrpcServer(AgentBackend(ScoringService(table={}, ready=lambda: True)), host=host, port=0,
                        max_request_bytes=MAX_BYTES)
    server.start()
    try:
        client = triton_grpc.InferenceServerClient(url=server.address)
        assert client.is_server_live(), server.address
        client.close()
    finally:
        server.stop()


class Held:
    """A backend whose calls wait for the test to let them go (ServerReady), counting those that wait."""

    def __init__(self):
        self.waiting, self.release, self.lock = 0, threading.Event(), threading.Condition()

    def ready(self) -> bool:
        with self.lock:
            self.waiting += 1
            self.lock.notify_all()
        return self.release.wait(30)


def test_grpc_calls_past_the_workers_and_the_queue_are_refused_at_once_not_held():
    backend = Held()
    server = GrpcServer(backend, host="127.0.0.1", port=0, max_request_bytes=MAX_BYTES, workers=2, max_queued=0)
    server.start()
    channel = grpc.insecure_channel(server.address)
    ready = channel.unary_unary(f"/{oip_grpc.SERVICE}/ServerReady",
                                request_serializer=oip_grpc.ServerReadyRequest.SerializeToString,
                                response_deserializer=oip_grpc.ServerReadyResponse.FromString)
    try:
        held = [ready.future(oip_grpc.ServerReadyRequest(), timeout=30) for _ in range(2)]  # both workers busy
        with backend.lock:
            assert backend.lock.wait_for(lambda: backend.waiting == 2, timeout=30)
        with pytest.raises(grpc.RpcError) as refused:
            ready(oip_grpc.ServerReadyRequest(), timeout=30)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused.value
        backend.release.set()
        assert [call.result().ready for call in held] == [True] * 2, "the held calls are answered"
    finally:
        backend.release.set()
        channel.close()
        server.stop()
