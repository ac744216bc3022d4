"""The local scoring endpoint under hostile clients: clear refusals, no hangs, flat memory.

One real agent process serves the ``linear`` module (input ``x``: FP32 [batch, 4]) with
``max_request_bytes`` = 4 KiB. Oversized bodies get 413, wrong shapes and datatypes 400 with the reason, a
client that sends half a request is timed out while others are served, and 1,000 bad requests leave the
agent's resident memory within a few MB of where it was.
"""

from __future__ import annotations

import http.client
import json
import socket
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest

from tests.agent.helpers import FakeServer
from tests.support.fleet import AgentProcess, start_agent

from .conftest import infer_version, linear_request

MAX_BODY = 4096


@pytest.fixture
def agent(tmp_path, mosquitto, fake_server: FakeServer) -> AgentProcess:
    process = start_agent(tmp_path, "score-1", broker_url=mosquitto.url, key_hex=fake_server.key_hex,
                          max_request_bytes=MAX_BODY, request_timeout_s=2.0)
    fake_server.publish_desired(process.device_id, 1, [fake_server.bundle(module="linear", version=1)])
    fake_server.wait_running(process.device_id, "linear", 1, timeout=60)
    yield process
    process.stop()


def infer_url(agent: AgentProcess) -> str:
    return f"{agent.scoring_url}/v2/models/linear/infer"


def bad_requests() -> list[tuple[bytes, int, str]]:
    """(body, expected status, a word the reason must contain)."""
    good = linear_request()
    wrong_shape = {"inputs": [{**good["inputs"][0], "shape": [1, 5], "data": [0.1] * 5}]}
    shape_mismatch = {"inputs": [{**good["inputs"][0], "shape": [2, 4]}]}
    wrong_dtype = {"inputs": [{**good["inputs"][0], "datatype": "BYTES", "data": ["a", "b", "c", "d"]}]}
    int_dtype = {"inputs": [{**good["inputs"][0], "datatype": "INT64", "data": [1, 2, 3, 4]}]}
    unknown_dtype = {"inputs": [{**good["inputs"][0], "datatype": "FP128"}]}
    unknown_input = {"inputs": [{**good["inputs"][0], "name": "nope"}]}
    return [
        (json.dumps(wrong_shape).encode(), 400, "shape"),
        (json.dumps(shape_mismatch).encode(), 400, "shape"),
        (json.dumps(wrong_dtype).encode(), 400, "BYTES"),
        (json.dumps(int_dtype).encode(), 400, "INT64"),
        (json.dumps(unknown_dtype).encode(), 400, "FP128"),
        (json.dumps(unknown_input).encode(), 400, "nope"),
        (b"{not json", 400, "json"),
        (b"[]", 400, ""),
        (b'{"inputs": 7}', 400, "inputs"),
        (b"\xff\xfe\x00", 400, ""),
    ]


def test_oversized_bodies_are_refused_with_413(agent):
    with httpx.Client(timeout=10) as client:
        response = client.post(infer_url(agent), content=b"{" + b" " * (MAX_BODY * 4) + b"}",
                               headers={"Content-Type": "application/json"})
        assert response.status_code == 413, response.text
        assert str(MAX_BODY) in response.json()["error"]
    with socket.create_connection(("127.0.0.1", int(agent.scoring_url.rsplit(":", 1)[1])), timeout=10) as sock:
        sock.sendall(b"POST /v2/models/linear/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999999\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 413"), "a huge announced body was not refused before reading"
    assert infer_version(agent.scoring_url) == 1


def test_wrong_shapes_and_datatypes_are_refused_with_400_and_the_reason(agent):
    with httpx.Client(timeout=10) as client:
        for body, status, word in bad_requests():
            response = client.post(infer_url(agent), content=body, headers={"Content-Type": "application/json"})
            assert response.status_code == status, (body, response.text)
            assert word.lower() in response.json()["error"].lower(), (body, response.text)
    assert infer_version(agent.scoring_url) == 1


def test_a_half_sent_request_does_not_stop_others_from_being_served(agent):
    port = int(agent.scoring_url.rsplit(":", 1)[1])
    stalled = []
    for _ in range(20):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(b"POST /v2/models/linear/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"inp")
        stalled.append(sock)
    try:
        assert infer_version(agent.scoring_url) == 1
    finally:
        for sock in stalled:
            sock.close()


def test_a_half_sent_request_is_timed_out_by_the_server(agent):
    port = int(agent.scoring_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /v2/models/linear/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        sock.settimeout(10)  # well above a sane server-side timeout for reading one small request
        try:
            sock.recv(4096)  # b"" (closed) or a 408: either way the server gave up on it
            closed = True
        except TimeoutError:
            closed = False
    assert closed, "the server kept a half-sent request open for 10 s"


def send_bad_requests(agent: AgentProcess, count: int, connections: int = 8) -> None:
    """``count`` bad requests over ``connections`` keep-alive connections in parallel (each answer is read)."""
    cases = bad_requests()
    host, port = "127.0.0.1", int(agent.scoring_url.rsplit(":", 1)[1])

    def one_connection(worker: int) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=10)
        for i in range(worker, count, connections):
            body = cases[i % len(cases)][0] if i % 10 else b"x" * (MAX_BODY * 2)  # every 10th: 413 and close
            conn.request("POST", "/v2/models/linear/infer", body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            if response.status == 413:
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=10)
        conn.close()

    with ThreadPoolExecutor(connections) as pool:
        list(pool.map(one_connection, range(connections)))


def test_memory_stays_flat_over_a_thousand_bad_requests(agent):
    process = psutil.Process(agent.popen.pid)
    send_bad_requests(agent, 200)  # warm-up: allocator pools, thread stacks, numpy and onnxruntime caches
    before = process.memory_info().rss
    send_bad_requests(agent, 1000)
    after = process.memory_info().rss
    growth_mb = (after - before) / 2**20
    print(f"agent RSS {before / 2**20:.1f} MB before, {after / 2**20:.1f} MB after 1,000 bad requests")
    assert growth_mb < 5, f"RSS grew by {growth_mb:.1f} MB over 1,000 bad requests"
    assert infer_version(agent.scoring_url) == 1
