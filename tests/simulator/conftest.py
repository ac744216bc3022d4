"""A real fleet server (in threads) on the suite's Mosquitto, and the iris-classifier module built on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefleet_cli.client import ApiClient
from edgefleet_cli.commands.module import build_module
from fleet_server.config import ServerConfig
from fleet_server.runner import ServerThread

IRIS = Path(__file__).resolve().parents[2] / "modules" / "iris-classifier"
ADMIN_TOKEN = "simulator-admin-token-0123456789"


@pytest.fixture
def server(tmp_path, mosquitto, monkeypatch):
    monkeypatch.setenv("EDGEFLEET_ADMIN_TOKEN", ADMIN_TOKEN)
    config = ServerConfig(data_dir=tmp_path / "server", port=0, broker_url=mosquitto.url)
    with ServerThread(config) as running:
        yield running


@pytest.fixture
def api(server) -> ApiClient:
    return ApiClient(server.url, ADMIN_TOKEN)


@pytest.fixture
def iris(api) -> dict:
    """The iris-classifier module built and signed by the server."""
    return build_module(api, IRIS)
