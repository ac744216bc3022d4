"""A broker node killed with SIGKILL loses nothing: devices and the server move to the other nodes of a real
three-node NATS cluster (MQTT listener, JetStream replicas 3), the rollout completes, telemetry is stored once.

A real server process given all three nodes (``--broker URL,URL,URL``) and in-process agents (the real agent
code) given them as ``broker_urls``; each walks the nodes in its own random order. While a staged rollout
runs, the node with the most agents is killed; then it is started again and, while the agents keep writing
heartbeats every 0.3 s, the node the server is on now is killed (so the server fails over in one phase or
both).
A three-node JetStream cluster keeps its quorum with one node down, not with two, hence one at a time.

Afterwards the rollout is ``completed`` with each wave started and succeeded once, every device runs its version,
and every telemetry record each agent's outbox issued (seqs 1..last, deleted only after their PUBACK) is
stored exactly once by the server, a redelivery included (:func:`tests.faults.conftest.assert_every_record_arrived_once`).
The seconds each device took from losing its node to its next CONNACK are printed.
"""

from __future__ import annotations

import dataclasses
import random
import statistics
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from edge_agent.agent import Agent
from edge_agent.config import AgentConfig
from tests.support.fleet import ServerProcess, start_server
from tests.support.nats import NatsCluster, NatsNode, start_nats_cluster
from tests.support.net import wait_for

from .conftest import (MODULE, assert_every_record_arrived_once, assert_history_applies_each_wave_once, build,
                       running_versions)

TAGS = {"site": "cluster"}


@pytest.fixture
def nats_cluster(tmp_path: Path) -> NatsCluster:
    cluster = start_nats_cluster(tmp_path / "nats")
    yield cluster
    cluster.stop()


def start_in_process_agents(workdir: Path, count: int, urls: list[str], key_hex: str) -> list[Agent]:
    agents = []
    for i in range(count):
        device_id = f"node-{i:02d}"
        agent = Agent(AgentConfig(device_id=device_id, state_dir=workdir / device_id, broker_urls=list(urls),
                                  trusted_keys=[key_hex], scoring_port=0, tags=dict(TAGS), heartbeat_interval_s=0.3,
                                  telemetry_flush_interval_s=0.2, fetch_timeout_s=2.0, keepalive_s=5))
        agent.start()
        agents.append(agent)
    return agents


def node_of(cluster: NatsCluster, port: int) -> NatsNode:
    return next(node for node in cluster.nodes if node.mqtt_port == port)


def server_node(cluster: NatsCluster, server: ServerProcess) -> NatsNode:
    """The node the server's link is on, from its own log line (``subscribed at the broker at URL``)."""
    lines = [line for line in server.log.read_text().splitlines() if "subscribed at the broker at" in line]
    url = lines[-1].rsplit(" ", 1)[-1]
    return next(node for node in cluster.nodes if node.url == url)


def kill_node(cluster: NatsCluster, node: NatsNode, agents: list[Agent]) -> list[Agent]:
    """SIGKILL ``node``; the agents that were on it, which must now fail over."""
    on_it = [agent for agent in agents if agent.link.port == node.mqtt_port and agent.link.connected]
    node.kill()
    survivors = {n.mqtt_port for n in cluster.nodes if n.pid is not None}
    wait_for(lambda: all(a.link.connected and a.link.port in survivors for a in agents), timeout=60,
             what=f"every agent to reconnect to a surviving node after {node.name} died")
    return on_it


def busiest(cluster: NatsCluster, agents: list[Agent], rng: random.Random) -> NatsNode:
    """The node with the most agents on it (ties: seeded)."""
    return max(cluster.nodes, key=lambda node: (sum(a.link.port == node.mqtt_port for a in agents), rng.random()))


def wait_server_on_a_live_node(cluster: NatsCluster, server: ServerProcess) -> None:
    wait_for(lambda: server_node(cluster, server).pid is not None
             and httpx.get(f"{server.url}/api/health", timeout=5).json().get("broker") == "connected",
             timeout=60, what="the server to be connected to a live node")


def reconnect_summary(agents: list[Agent], since: dict[str, int] | None = None) -> str:
    """The reconnect times of ``agents`` (only those after ``since``: device id -> reconnects before)."""
    times = [t for agent in agents for t in agent.link.reconnect_s[(since or {}).get(agent.device_id, 0):]]
    if not times:
        return "no reconnects"
    return (f"{len(times)} reconnects, median {statistics.median(times):.2f}s, max {max(times):.2f}s "
            f"({', '.join(f'{t:.2f}' for t in sorted(times))})")


def cluster_failover(tmp_path: Path, cluster: NatsCluster, rng: random.Random, *, devices: int) -> None:
    server = start_server(tmp_path, ",".join(cluster.urls))
    agents: list[Agent] = []
    try:
        agents = start_in_process_agents(tmp_path, devices, cluster.urls, server.signing_key_hex())
        device_ids = [agent.device_id for agent in agents]
        spread = {node.name: sum(a.link.port == node.mqtt_port for a in agents) for node in cluster.nodes}
        print(f"{devices} agents over the nodes at random: {spread}")
        with server.api() as api:
            wait_for(lambda: set(device_ids) <= {d["id"] for d in api.get("/api/devices").json()
                                                 if d["status"] == "online"},
                     timeout=60, what=f"{devices} agents to register through the cluster")
            build(api, 2.0)
            response = api.post("/api/rollouts", json={
                "module": MODULE, "version": 1, "selector": TAGS,
                "plan": {"canary": 1, "wave_size": 2, "growth": 2, "max_devices_per_minute": 600}})
            assert response.status_code == 201, response.text
            rollout_id = response.json()["id"]

            # 1. during the rollout: the node with the most agents dies
            wait_for(lambda: api.get(f"/api/rollouts/{rollout_id}").json()["wave"] >= 1, timeout=60,
                     what="the rollout to pass its canary")
            first = busiest(cluster, agents, rng)
            was_servers = server_node(cluster, server) is first
            moved = kill_node(cluster, first, agents)
            state = api.get(f"/api/rollouts/{rollout_id}").json()
            print(f"killed {first.name} ({len(moved)} agents{' and the server' if was_servers else ''} on it) at "
                  f"rollout {state['state']}, wave {state['wave']}")
            wait_server_on_a_live_node(cluster, server)

            def completed() -> dict | None:
                rollout = api.get(f"/api/rollouts/{rollout_id}").json()
                assert rollout["state"] in ("running", "completed"), rollout
                return rollout if rollout["state"] == "completed" else None

            done = wait_for(completed, timeout=120, interval=0.5, what="the rollout to complete")
            assert done["counts"]["running"] == devices and done["waiting"] == []
            wait_for(lambda: set(running_versions(api, device_ids).values()) == {1}, timeout=60,
                     what="every device to report v1 running")
            assert_history_applies_each_wave_once(api, rollout_id, device_ids)
            assert all(agent.models.get(MODULE) == 1 for agent in agents), "every agent serves the rolled-out version"
        print(f"after {first.name} died: {reconnect_summary(agents)}")

        # 2. during telemetry: the node comes back, then another one dies
        first.start()
        cluster.wait_ready()
        second = server_node(cluster, server)  # the server fails over in one phase or the other, devices in both
        before = {agent.device_id: len(agent.link.reconnect_s) for agent in agents}
        moved = kill_node(cluster, second, agents)
        wait_server_on_a_live_node(cluster, server)
        print(f"killed {second.name} during telemetry (the server's node, {len(moved)} agents on it): "
              f"{reconnect_summary(agents, before)}")
        alive = next(node for node in cluster.nodes if node.pid is not None)
        checked = dataclasses.replace(server, broker_url=alive.url)  # the redelivery check publishes there
        for agent in agents:
            view = SimpleNamespace(device_id=agent.device_id, state_dir=agent.config.state_dir)
            assert_every_record_arrived_once(checked, view, timeout=90)
    finally:
        for agent in agents:
            agent.stop()
        server.stop()


def test_a_killed_broker_node_loses_no_rollout_step_and_no_telemetry(tmp_path, nats_cluster, rng):
    cluster_failover(tmp_path, nats_cluster, rng, devices=3)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_killed_broker_node_loses_nothing_for_twenty_devices(tmp_path, nats_cluster, rng):
    cluster_failover(tmp_path, nats_cluster, rng, devices=20)
