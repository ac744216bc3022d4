"""Hostile payloads through a real Mosquitto reach the real server: counted as malformed, never a traceback."""

from __future__ import annotations

import logging

import httpx
import pytest

from fleet_protocol import topics
from tests.server import messages as msg
from tests.server.mqtt_device import FakeDevice
from tests.support.fleet import ADMIN_TOKEN
from tests.support.net import wait_for

DEEP = 300_000


@pytest.fixture
def http(server_thread):
    with httpx.Client(base_url=server_thread.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                      timeout=30) as client:
        yield client


@pytest.fixture
def device(server_thread):
    fake = FakeDevice(server_thread.config.broker_url, "cam-1")
    yield fake
    fake.close()


def test_deep_nesting_and_huge_integers_are_counted_as_malformed_without_a_traceback(http, device, caplog):
    hostile = [
        (topics.device_topic("cam-1", "status"), b"[" * DEEP + b"]" * DEEP),
        (topics.device_topic("cam-1", "reported"), b'{"a":' * DEEP + b"1" + b"}" * DEEP),
        (topics.device_topic("cam-1", "telemetry"), msg.telemetry("cam-1", [2**70])),
    ]
    with caplog.at_level(logging.WARNING):
        for topic, payload in hostile:
            device.publish(topic, payload)
        wait_for(lambda: http.get("/api/health").json()["malformed_messages"] >= len(hostile),
                 what="three refusals", timeout=30)
        device.publish(topics.device_topic("cam-1", "telemetry"), msg.telemetry("cam-1", [1]))
        wait_for(lambda: http.get("/api/telemetry", params={"device_id": "cam-1"}).json(), what="a good batch")
    health = http.get("/api/health").json()
    assert health["malformed_by_kind"] == {"status": 1, "reported": 1, "telemetry": 1}
    tracebacks = [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert tracebacks == []
    warnings = " ".join(r.getMessage() for r in caplog.records)
    assert f"nests arrays and objects {DEEP} deep" in warnings and "field 'seq' must be an integer" in warnings
