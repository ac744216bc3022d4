"""Hostile payloads through a real Mosquitto reach the real server and a real agent: counted as malformed, never a
traceback, and the next good message still works."""

from __future__ import annotations

import logging

import httpx
import pytest

from fleet_protocol import topics
from tests.agent.conftest import make_agent, server  # noqa: F401 - the agent suite's fixtures
from tests.server import messages as msg
from tests.server.mqtt_device import FakeDevice
from tests.support.fleet import ADMIN_TOKEN
from tests.support.net import wait_for

DEEP = 300_000


@pytest.fixture
def broker(mosquitto):
    return mosquitto


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


def test_a_retained_deeply_nested_desired_state_is_counted_as_malformed_at_every_start(server, make_agent, caplog):
    topic = topics.device_topic("dev-1", "desired")
    server.publish_raw(topic, b'{"signed":' * DEEP + b"1" + b"}" * DEEP, retain=True)  # there before the agent
    with caplog.at_level(logging.WARNING):
        for _ in range(2):  # a restart meets the same retained message again
            agent = make_agent()
            wait_for(lambda: agent.telemetry.malformed_total == 1, what="the refusal to be counted")
            agent.stop()
        server.publish_desired("dev-1", 1, [server.bundle(version=1)])  # replaces the retained message
        agent = make_agent()
        server.wait_running("dev-1", "linear", 1)
    assert [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR] == []
    assert any(f"nests arrays and objects {DEEP} deep" in r.getMessage() for r in caplog.records)
