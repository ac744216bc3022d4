"""Fixtures for the agent suite: a fake server over a real Mosquitto, and agents in this process."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.agent import Agent
from edge_agent.config import AgentConfig
from tests.agent.helpers import FakeServer


@pytest.fixture
def broker(mosquitto):
    """The suite's real Mosquitto (see tests/conftest.py); its sessions survive a restart."""
    return mosquitto


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
