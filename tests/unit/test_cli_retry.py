"""The CLI follows the agent's one retry policy (fleet_protocol.retry), against a real HTTPS server."""

from __future__ import annotations

import httpx
import pytest

from edgefleet_cli.client import ApiClient
from edgefleet_cli.commands.score import _call
from edgefleet_cli.errors import CliError
from tests.support.https_server import OIP_ANSWER, CountingHttpsServer


@pytest.fixture
def server(tmp_path, monkeypatch):
    with CountingHttpsServer(tmp_path / "tls") as server:
        monkeypatch.setenv("SSL_CERT_FILE", str(server.ca_file))  # httpx trusts the test CA through it
        yield server


def test_a_503_with_retry_after_is_retried_for_an_idempotent_get(server):
    server.answer_next(503, b'{"detail": "starting"}', {"Retry-After": "0"})
    server.answer_next(200, b'{"devices": []}')
    assert ApiClient(server.url, "t").get("/api/devices") == {"devices": []}
    assert server.requests == [("GET", "/api/devices")] * 2


def test_a_503_with_retry_after_is_not_retried_for_a_post_that_is_not_idempotent(server):
    server.answer_next(503, b'{"detail": "starting"}', {"Retry-After": "0"})
    with pytest.raises(CliError, match=r"starting \(the server answered 503\)"):
        ApiClient(server.url, "t").post("/api/deployments", json={"module": "m"})
    assert server.requests == [("POST", "/api/deployments")]


def test_batch_scoring_declares_its_infer_post_idempotent_and_retries_it(server):
    server.answer_next(503, b'{"error": "busy"}', {"Retry-After": "0"})
    server.answer_next(200, OIP_ANSWER)
    with httpx.Client(base_url=server.url) as http:
        assert _call(http, "POST", "/v2/models/m/infer", json={"inputs": []})["model_name"] == "m"
    assert len(server.requests) == 2


def test_a_500_is_not_retried_even_for_a_get(server):
    server.answer_next(500, b'{"detail": "bug"}')
    with pytest.raises(CliError, match="bug"):
        ApiClient(server.url, "t").get("/api/devices")
    assert len(server.requests) == 1
