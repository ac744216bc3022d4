"""A real Prometheus scrapes a real fleet server and a real agent process: targets up, edgefleet queries right."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.server.builders import tar_gz
from tests.support.fleet import start_agent, start_server
from tests.support.net import wait_for
from tests.support.prometheus import ScrapeJob, start_prometheus

IRIS = Path(__file__).resolve().parents[2] / "modules" / "iris-classifier"
REQUESTS = 7


@pytest.fixture
def prometheus_over_a_fleet(tmp_path, mosquitto):
    """A server and one agent serving iris-classifier, scraped by Prometheus (the server with a viewer token)."""
    server = start_server(tmp_path, mosquitto.url)
    processes = [server]
    prometheus = None
    try:
        agent = start_agent(tmp_path, "prom-1", broker_url=mosquitto.url, key_hex=server.signing_key_hex(),
                            tags={"site": "metrics"})
        processes.append(agent)
        with server.api() as api:
            spec = json.loads((IRIS / "module.json").read_text())
            files = {name: (IRIS / name).read_bytes() for name in ["module.json", *spec["files"]]}
            built = api.post("/api/bundles/from-module", files={"file": ("iris.tar.gz", tar_gz(files))})
            assert built.status_code == 201, built.text
            deployed = api.post("/api/deployments", json={"module": "iris-classifier",
                                                          "selector": {"site": "metrics"}})
            assert deployed.status_code == 201, deployed.text
            viewer = api.post("/api/tokens", json={"name": "prometheus", "role": "viewer"}).json()["token"]
        wait_for(lambda: httpx.get(f"{agent.scoring_url}/v2/models/iris-classifier/ready").status_code == 200,
                 timeout=60, what="the agent to serve iris-classifier")
        prometheus = start_prometheus(tmp_path / "prometheus", [
            ScrapeJob("edgefleet-server", server.url, token=viewer), ScrapeJob("edgefleet-agent", agent.scoring_url)])
        yield prometheus, server, agent
    finally:
        if prometheus is not None:
            prometheus.stop()
        for process in reversed(processes):
            process.stop()


def test_prometheus_scrapes_server_and_agent_and_queries_what_happened(prometheus_over_a_fleet):
    prometheus, server, agent = prometheus_over_a_fleet
    sample = json.loads((IRIS / "sample.json").read_text())
    for _ in range(REQUESTS):
        assert httpx.post(f"{agent.scoring_url}/v2/models/iris-classifier/infer", json=sample).status_code == 200

    def both_up() -> bool:
        health = {t["labels"]["job"]: (t["health"], t["lastError"]) for t in prometheus.targets()}
        return health == {"edgefleet-server": ("up", ""), "edgefleet-agent": ("up", "")}

    wait_for(both_up, timeout=30, what="prometheus to report both targets up")

    def scalar(promql: str) -> float | None:
        result = prometheus.query(promql)
        return float(result[0]["value"][1]) if result else None

    requests = 'sum(edgefleet_agent_requests_total{job="edgefleet-agent",module="iris-classifier"})'
    wait_for(lambda: scalar(requests) == REQUESTS, timeout=30, what=f"{requests} = {REQUESTS}")
    online = 'sum(edgefleet_devices{job="edgefleet-server",status="online"})'
    wait_for(lambda: scalar(online) == 1, timeout=30, what=f"{online} = 1")
    assert scalar('edgefleet_broker_connected{job="edgefleet-server"}') == 1
    assert scalar('edgefleet_agent_broker_connected{job="edgefleet-agent"}') == 1
