"""Fixtures shared by every test suite."""

from __future__ import annotations

import shutil

import pytest

from tests.support.mosquitto import Mosquitto, start_mosquitto


@pytest.fixture
def mosquitto(tmp_path) -> Mosquitto:
    """A real Mosquitto broker on a free port, stopped after the test."""
    if not (shutil.which("mosquitto") or shutil.os.path.exists("/usr/sbin/mosquitto")):
        pytest.fail("mosquitto is not installed: run `make test`, which installs it")
    broker = start_mosquitto(tmp_path / "mosquitto")
    yield broker
    broker.stop()
