"""Fixtures for the agent suite: a fake server over a real Mosquitto, and agents in this process."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.agent import Agent
from edge_agent.config import AgentConfig
from tests.agent.helpers import FakeServer
from tests.support.mosquitto import start_mosquitto


@pytest.fixture
def broker(tmp_path):
    """A real Mosquitto whose persistent sessions survive its restart.

    ``user root``: started as root, Mosquitto would otherwise switch to the ``mosquitto`` user, which
    cannot write its database into pytest's private temporary folder, and would forget every session.
    """
    mosquitto = start_mosquitto(tmp_path / "mosquitto", extra_config="user root\n")
    yield mosquitto
    mosquitto.stop()


@pytest.fixture
def server(broker):
    fake = FakeServer(broker.host, broker.port)
    yield fake
    fake.close()


def agent_config(tmp_path: Path, broker_url: str, key_hex: str, device_id: str = "dev-1", **overrides) -> AgentConfig:
    settings = dict(scoring_port=0, heartbeat_interval_s=0.5, telemetry_flush_interval_s=0.2,
                    fetch_timeout_s=1.0, keepalive_s=5)
    settings.update(overrides)
    return AgentConfig(device_id=device_id, state_dir=tmp_path / device_id / "state", broker_url=broker_url,
                       trusted_keys=[key_hex], **settings)


@pytest.fixture
def make_agent(tmp_path, broker, server):
    agents: list[Agent] = []

    def make(device_id: str = "dev-1", *, start: bool = True, **overrides) -> Agent:
        agent = Agent(agent_config(tmp_path, broker.url, server.key_hex, device_id, **overrides))
        if start:
            agent.start()
            agent.link.wait_connected(10)
        agents.append(agent)
        return agent

    yield make
    for agent in agents:
        agent.stop()
