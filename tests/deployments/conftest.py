"""A real fleet for deployment tests: the server in threads, a real Mosquitto, and many in-process agents.

Each :class:`~edge_agent.agent.Agent` runs the real agent code with its own
state dir and a free scoring port; the server and the agents meet only
through the broker, as they do in production.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from edge_agent.agent import Agent
from edge_agent.config import AgentConfig
from fleet_server.config import ServerConfig
from fleet_server.runner import ServerThread
from fleet_server.store import Database
from tests.server.builders import module_files, tar_gz, tiny_onnx
from tests.support.net import wait_for

ADMIN_TOKEN = "deployments-admin-token"
BROKEN_RUN = b"def run(inputs):\n    raise RuntimeError('this version is broken')\n"


@dataclass
class Fleet:
    """The server, its API client and the agents of one test."""

    workdir: Path
    broker_url: str
    database_url: str | None = None  # None: SQLite in the server's data dir (the `store_url` fixture)
    server: ServerThread | None = None
    api: httpx.Client | None = None
    agents: dict[str, Agent] = field(default_factory=dict)

    def start_server(self, **settings: object) -> None:
        """Start the server in threads, its rollout controller ticking every 0.1 s; ``settings``: more ServerConfig."""
        settings = {"port": 0, **settings}
        config = ServerConfig(data_dir=self.workdir / "server", database_url=self.database_url,
                              embedded_broker_port=0, broker_url=self.broker_url, rollout_tick_s=0.1, **settings)
        self.server = ServerThread(config).start()
        self.api = httpx.Client(base_url=self.server.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                                timeout=30)

    def stop_server(self) -> None:
        self.api.close()
        self.server.stop()
        self.server = self.api = None

    @contextmanager
    def store(self) -> Iterator[Database]:
        """The server's database opened on its own, as another process would (e.g. while the server is stopped)."""
        db = Database(self.database_url) if self.database_url else Database.for_data_dir(self.workdir / "server")
        try:
            yield db
        finally:
            db.close()

    def key_hex(self) -> str:
        return self.api.get("/api/keys").json()["signing_keys"][0]["public_key"]

    def start_agents(self, count: int, *, tags: dict[str, str] | None = None, prefix: str = "dev") -> list[Agent]:
        key = self.key_hex()
        started = []
        for i in range(count):
            device_id = f"{prefix}-{i:02d}"
            agent = Agent(AgentConfig(device_id=device_id, state_dir=self.workdir / device_id, broker_url=self.broker_url,
                                      trusted_keys=[key], scoring_port=0, tags=dict(tags or {}),
                                      heartbeat_interval_s=0.5, telemetry_flush_interval_s=0.2, fetch_timeout_s=1.0,
                                      keepalive_s=5))
            agent.start()
            self.agents[device_id] = agent
            started.append(agent)
        ids = {a.device_id for a in started}
        wait_for(lambda: ids <= {d["id"] for d in self.api.get("/api/devices").json() if d["status"] == "online"},
                 timeout=20, what=f"{count} agents to register")
        return started

    def build(self, name: str = "scaler", *, scale: float = 2.0, broken: bool = False) -> dict:
        files = module_files(name, model=tiny_onnx(scale))
        if broken:
            files["main.py"] = BROKEN_RUN
        response = self.api.post("/api/bundles/from-module", files={"file": ("m.tar.gz", tar_gz(files))})
        assert response.status_code == 201, response.text
        return response.json()

    def post(self, path: str, body: dict | None = None, *, expect: int = 200) -> dict:
        response = self.api.post(path, json=body)
        assert response.status_code == expect, response.text
        return response.json()

    def rollout(self, rollout_id: int) -> dict:
        return self.api.get(f"/api/rollouts/{rollout_id}").json()

    def wait_rollout(self, rollout_id: int, check, *, timeout: float = 20, what: str = "") -> dict:
        def done():
            rollout = self.rollout(rollout_id)
            return rollout if check(rollout) else None

        return wait_for(done, timeout=timeout, what=what or f"rollout {rollout_id} to reach the expected state")

    def wait_models(self, expected: dict[str, int], agents: list[Agent] | None = None, *, timeout: float = 20) -> None:
        agents = agents if agents is not None else list(self.agents.values())
        wait_for(lambda: all(a.models == expected for a in agents), timeout=timeout,
                 what=f"{len(agents)} agents to serve {expected}")

    def close(self) -> None:
        for agent in self.agents.values():
            agent.stop()
        if self.server is not None:
            self.stop_server()


def running_fleet(fleet_class: type[Fleet], tmp_path: Path, broker_url: str, monkeypatch,
                  database_url: str | None = None):
    """The body of a ``fleet`` fixture: a started ``fleet_class`` (Fleet or a subclass), closed after the test."""
    monkeypatch.setenv("EDGEFLEET_ADMIN_TOKEN", ADMIN_TOKEN)
    running = fleet_class(tmp_path, broker_url, database_url)
    running.start_server()
    yield running
    running.close()


@pytest.fixture
def fleet(tmp_path, mosquitto, monkeypatch, store_url) -> Fleet:
    yield from running_fleet(Fleet, tmp_path, mosquitto.url, monkeypatch, store_url)
