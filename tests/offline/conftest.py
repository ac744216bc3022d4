"""Fixtures for the offline-first tests: the server API in process (from the server suite) and a real Mosquitto."""

from __future__ import annotations

from tests.server.conftest import api, config, fleet  # noqa: F401 - fixtures re-used as they are
