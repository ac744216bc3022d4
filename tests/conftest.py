"""Fixtures shared by every test suite."""

from __future__ import annotations

import shutil

import pytest

from fleet_server.config import ServerConfig
from fleet_server.runner import ServerThread
from tests.support.fleet import ADMIN_TOKEN
from tests.support.mosquitto import Mosquitto, start_mosquitto


@pytest.fixture
def mosquitto(tmp_path) -> Mosquitto:
    """A real Mosquitto broker on a free port, stopped after the test."""
    if not (shutil.which("mosquitto") or shutil.os.path.exists("/usr/sbin/mosquitto")):
        pytest.fail("mosquitto is not installed: run `make test`, which installs it")
    broker = start_mosquitto(tmp_path / "mosquitto")
    yield broker
    broker.stop()


@pytest.fixture
def server_thread(tmp_path, mosquitto, monkeypatch) -> ServerThread:
    """A fleet server in this process's threads on the test's Mosquitto; admin token ``tests.support.fleet.ADMIN_TOKEN``."""
    monkeypatch.setenv("EDGEFLEET_ADMIN_TOKEN", ADMIN_TOKEN)
    config = ServerConfig(data_dir=tmp_path / "server", port=0, broker_url=mosquitto.url)
    with ServerThread(config) as running:
        yield running
