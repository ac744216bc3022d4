"""Fixtures for the fleet server tests: a data dir, the API through TestClient, a running server."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from fleet_server.api.app import create_app
from fleet_server.config import ServerConfig
from fleet_server.fleet import Fleet
from fleet_server.runner import ServerThread

ADMIN_TOKEN = "test-admin-token"


@pytest.fixture
def config(tmp_path, monkeypatch, store_url) -> ServerConfig:
    monkeypatch.setenv("EDGEFLEET_ADMIN_TOKEN", ADMIN_TOKEN)
    return ServerConfig(data_dir=tmp_path / "server", database_url=store_url, port=0, embedded_broker_port=0)


@pytest.fixture
def fleet(config):
    """The server core with no MQTT link: publishing is a no-op, everything else is real."""
    core = Fleet(config)
    yield core
    core.close()


@pytest.fixture
def api(config, fleet) -> TestClient:
    client = TestClient(create_app(config, fleet=fleet), headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    yield client
    client.close()


@pytest.fixture
def server(config, mosquitto):
    """The whole server (API over HTTP, MQTT link) against a real Mosquitto."""
    config.broker_url = mosquitto.url
    with ServerThread(config) as running:
        yield running


def register(api: TestClient, name: str, data: bytes, **fields) -> dict:
    response = api.post(f"/api/models/{name}", files={"file": ("model.bin", data)}, data=fields)
    assert response.status_code == 201, response.text
    return response.json()
