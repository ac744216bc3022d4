"""A real fleet for benchmarks: server thread + embedded broker + one in-process agent.

Models reach the agent the way they reach any device: registered, built into
a signed bundle, deployed, fetched over MQTT, verified and installed.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Iterator

import httpx

from edge_agent.agent import Agent
from edge_agent.config import AgentConfig
from fleet_server.config import ServerConfig
from fleet_server.runner import ServerThread

DEVICE_ID = "bench-1"


class BenchFleet:
    def __init__(self, server: ServerThread, agent: Agent, api: httpx.Client):
        self.server, self.agent, self.api = server, agent, api

    def deploy_model(self, name: str, model: bytes, *, timeout_s: float = 60) -> int:
        """Register ``model`` under ``name``, bundle and deploy it; return the running version."""
        response = self.api.post(f"/api/models/{name}", files={"file": (f"{name}.onnx", model)})
        response.raise_for_status()
        bundle = self.api.post("/api/bundles/from-model", json={"model": name})
        bundle.raise_for_status()
        version = bundle.json()["version"]
        self.api.post("/api/deployments", json={"module": name, "version": version,
                                                "devices": [DEVICE_ID]}).raise_for_status()
        deadline = time.monotonic() + timeout_s
        while self.agent.models.get(name) != version:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} v{version} did not reach the agent in {timeout_s}s")
            time.sleep(0.05)
        return version


@contextlib.contextmanager
def bench_fleet(workdir: Path) -> Iterator[BenchFleet]:
    server = ServerThread(ServerConfig(data_dir=workdir / "server", port=0, embedded_broker_port=0)).start()
    api = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.admin_token}"}, timeout=60)
    agent = Agent(AgentConfig(device_id=DEVICE_ID, state_dir=workdir / "agent", broker_url=server.broker_url,
                              trusted_keys=[server.signing_public_key_hex], scoring_port=0))
    try:
        agent.start()
        deadline = time.monotonic() + 30
        while not any(d["id"] == DEVICE_ID for d in api.get("/api/devices").json()):
            if time.monotonic() > deadline:
                raise RuntimeError("the benchmark agent never registered with the server")
            time.sleep(0.05)
        yield BenchFleet(server, agent, api)
    finally:
        agent.stop()
        api.close()
        server.stop()
