"""A real fleet server (in threads) on the suite's Mosquitto, and the iris-classifier module built on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefleet_cli.client import ApiClient
from edgefleet_cli.commands.module import build_module
from tests.support.fleet import ADMIN_TOKEN

IRIS = Path(__file__).resolve().parents[2] / "modules" / "iris-classifier"


@pytest.fixture
def server(server_thread):
    return server_thread


@pytest.fixture
def api(server) -> ApiClient:
    return ApiClient(server.url, ADMIN_TOKEN)


@pytest.fixture
def iris(api) -> dict:
    """The iris-classifier module built and signed by the server."""
    return build_module(api, IRIS)
