"""A real fleet for the offline tests: Mosquitto, the server in a thread (restartable on its port), one agent."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx

from edge_agent.agent import Agent
from edge_agent.config import AgentConfig
from fleet_server.config import ServerConfig
from fleet_server.runner import ServerThread
from tests.server.builders import tar_gz, tiny_onnx
from tests.support.mosquitto import Mosquitto, start_mosquitto
from tests.support.net import free_port, wait_for

TOKEN = "offline-admin-token-0123456789"
DEVICE = "dev-1"


class Fleet:
    def __init__(self, workdir: Path, broker: Mosquitto, **server_settings):
        self.broker = broker
        self.config = ServerConfig(data_dir=workdir / "server", port=free_port(), broker_url=broker.url,
                                   **server_settings)
        self.server = ServerThread(self.config).start()
        self.url = self.server.url
        self.api = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        self.agent: Agent | None = None

    def start_agent(self, workdir: Path, **settings) -> Agent:
        settings = {"cloud_url": self.url, "cloud_token": TOKEN, **settings}
        config = AgentConfig(device_id=DEVICE, state_dir=workdir / "agent", broker_url=self.broker.url,
                             trusted_keys=[self.server.signing_public_key_hex], scoring_port=0,
                             heartbeat_interval_s=0.3, telemetry_flush_interval_s=0.1, keepalive_s=5, **settings)
        self.agent = Agent(config)
        self.agent.start()
        return self.agent

    def deploy(self, model: str, config: dict, *, scale: float = 2.0, entry_script: str | None = None) -> int:
        """Register ``model``, wrap it in a bundle with ``config`` and wait until the agent serves it."""
        self.api.post(f"/api/models/{model}", files={"file": ("m.onnx", tiny_onnx(scale))}).raise_for_status()
        bundle = self.api.post("/api/bundles/from-model", json={"model": model, "config": config,
                                                                "entry_script": entry_script})
        bundle.raise_for_status()
        return self.serve(model, bundle.json()["version"])

    def deploy_module(self, folder: Path, **config) -> int:
        """Build the module in ``folder`` (``modules/<name>``), its config updated with ``config``; serve it."""
        spec = json.loads((folder / "module.json").read_text())
        spec["config"] = {**spec.get("config", {}), **config}
        files = {"module.json": json.dumps(spec).encode(), **{n: (folder / n).read_bytes() for n in spec["files"]}}
        bundle = self.api.post("/api/bundles/from-module", files={"file": ("m.tar.gz", tar_gz(files))})
        bundle.raise_for_status()
        return self.serve(spec["name"], bundle.json()["version"])

    def serve(self, module: str, version: int) -> int:
        """Deploy bundle ``version`` of ``module`` to the agent and wait until it serves it."""
        self.api.post("/api/deployments", json={"module": module, "version": version,
                                                "devices": [DEVICE]}).raise_for_status()
        wait_for(lambda: self.agent.models.get(module) == version, timeout=30,
                 what=f"{module} v{version} on the agent")
        return version

    def stop_server(self) -> None:
        self.server.stop()

    def start_server(self) -> None:
        self.server = ServerThread(self.config).start()

    def close(self) -> None:
        if self.agent is not None:
            self.agent.stop()
        self.api.close()
        self.server.stop()


@contextmanager
def running_fleet(workdir: Path, monkeypatch, **server_settings) -> Iterator[Fleet]:
    monkeypatch.setenv("EDGEFLEET_ADMIN_TOKEN", TOKEN)
    broker = start_mosquitto(workdir / "mosquitto")  # persistent: the server's session survives a restart
    fleet = Fleet(workdir, broker, **server_settings)
    try:
        yield fleet
    finally:
        fleet.close()
        broker.stop()


def until(check, what: str, timeout: float = 30):
    return wait_for(check, timeout=timeout, interval=0.05, what=what)
