"""Shared pieces of the fault-injection suite: seeded randomness, a played server, OIP requests.

Every test takes its random choices from :func:`rng`, seeded by ``EDGEFLEET_FAULT_SEED`` (default 8), so a
failing run is repeated by exporting the seed it printed.
"""

from __future__ import annotations

import os
import random

import httpx
import pytest

from tests.agent.helpers import FakeServer

SEED = int(os.environ.get("EDGEFLEET_FAULT_SEED", "8"))


@pytest.fixture
def rng(request) -> random.Random:
    """A ``random.Random`` seeded by ``EDGEFLEET_FAULT_SEED`` and the test's name (repeatable per test)."""
    print(f"fault seed: EDGEFLEET_FAULT_SEED={SEED}")
    return random.Random(f"{SEED}:{request.node.name}")


@pytest.fixture
def fake_server(mosquitto):
    server = FakeServer(mosquitto.host, mosquitto.port)
    yield server
    server.close()


def linear_request(batch: int = 1) -> dict:
    """A valid OIP v2 request for the ``linear`` test model (input ``x``: FP32 [batch, 4])."""
    return {"inputs": [{"name": "x", "shape": [batch, 4], "datatype": "FP32", "data": [0.25] * (4 * batch)}]}


def infer_version(scoring_url: str, module: str = "linear") -> int:
    """Score one request and return the ``model_version`` that answered (asserts a 200)."""
    response = httpx.post(f"{scoring_url}/v2/models/{module}/infer", json=linear_request(), timeout=10)
    assert response.status_code == 200, response.text
    return int(response.json()["model_version"])
