"""The cloud client over a real HTTPS server: kept-alive connections, dropped ones, and the one retry policy."""

from __future__ import annotations

import json
import threading

import pytest

from edge_agent.cloud_client import CloudClient
from edgefleet_runtime.fallback import CircuitBreaker
from fleet_protocol.errors import TransportError
from fleet_protocol.retry import RetryPolicy
from tests.support.https_server import CountingHttpsServer

BODY = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1.0, 2.0]}]}).encode()


@pytest.fixture
def https(tmp_path, monkeypatch):
    def start(**behaviour) -> CountingHttpsServer:
        server = CountingHttpsServer(tmp_path / f"tls{len(started)}", **behaviour)
        monkeypatch.setenv("SSL_CERT_FILE", str(server.ca_file))  # the client's one context trusts the test CA
        started.append(server.__enter__())
        return server

    started: list[CountingHttpsServer] = []
    yield start
    for server in started:
        server.__exit__(None, None, None)


def client_for(server: CountingHttpsServer, *, attempts: int = 1, **kwargs) -> tuple[CloudClient, list[float]]:
    waits: list[float] = []
    client = CloudClient(server.url, token="t", retry=RetryPolicy(attempts=attempts, base_delay_s=0.1),
                         breaker=CircuitBreaker(failure_threshold=1), sleep=waits.append, draw=lambda: 0.5,
                         **kwargs)
    return client, waits


def test_sequential_calls_reuse_one_tls_connection(https):
    server = https()
    client, _ = client_for(server)
    answers = [client.infer("m", 1, BODY) for _ in range(20)]
    assert all(a["outputs"][0]["data"] == [0.25, 0.75] for a in answers)
    assert (server.connections, len(server.requests)) == (1, 20)
    client.close()


def test_concurrent_calls_open_at_most_max_connections(https):
    server = https()
    client, _ = client_for(server, max_connections=2)
    threads = [threading.Thread(target=lambda: [client.infer("m", 1, BODY) for _ in range(10)]) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(server.requests) == 60
    assert 1 <= server.connections <= 2


def test_a_connection_the_server_closed_while_idle_is_replaced_without_a_failure(https):
    server = https(close_after_each=True)
    client, waits = client_for(server)  # no retries: a reconnect that counted as a try would fail the call
    for _ in range(5):
        client.infer("m", 1, BODY)
    assert server.connections == 5 and waits == []
    assert client.breaker.failures == 0 and client.breaker.state == CircuitBreaker.CLOSED


def test_a_close_racing_the_send_on_a_reused_connection_reconnects_once_without_a_failure(https):
    server = https(drop_reused=True)  # the second request on a connection finds it closed, unanswered
    client, waits = client_for(server)
    for _ in range(3):
        client.infer("m", 1, BODY)
    assert server.connections == 3 and len(server.requests) == 3 and waits == []
    assert client.breaker.failures == 0


def test_a_503_with_retry_after_is_retried_after_that_wait(https):
    server = https()
    server.answer_next(503, b'{"error": "busy"}', {"Retry-After": "1"})
    client, waits = client_for(server, attempts=2)
    assert client.infer("m", 1, BODY)["model_name"] == "m"
    assert waits == [1.05] and len(server.requests) == 2 and server.connections == 1


def test_a_500_is_not_retried_and_counts_as_a_cloud_failure(https):
    server = https()
    server.answer_next(500, b'{"error": "model crashed"}')
    client, waits = client_for(server, attempts=3)
    with pytest.raises(TransportError, match="answered 500: model crashed"):
        client.infer("m", 1, BODY)
    assert waits == [] and len(server.requests) == 1
    assert client.breaker.state == CircuitBreaker.OPEN


def test_an_unreachable_cloud_is_tried_as_often_as_the_policy_says_then_counts_once(https, tmp_path):
    server = https()
    server.__exit__(None, None, None)  # nothing listens on its port any more
    client, waits = client_for(server, attempts=3)
    with pytest.raises(TransportError, match="unreachable: ConnectionRefusedError"):
        client.infer("m", 1, BODY)
    assert waits == [0.05, 0.1], "full jitter (draw 0.5) under the doubling ceiling"
    assert client.breaker.failures == 1
