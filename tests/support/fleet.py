"""Real server and agent processes for end-to-end tests, started through the CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx

from simulators.devices import DeviceSpec, spawn_agent, write_agent_config

from .net import free_port, wait_for

ADMIN_TOKEN = "test-admin-token-0123456789"
# The key sealing keys and CA in a shared database (fleet_server/secret_box.py): every server a test starts on
# PostgreSQL gets it (the environment of the test wins when it sets its own).
SECRET_KEY = "ZWRnZWZsZWV0IHRlc3Qgc2VjcmV0IGtleSwgMzIgYnk="


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""


def cli(*args: str, log: Path) -> subprocess.Popen:
    env = {"EDGEFLEET_SECRET_KEY": SECRET_KEY, **os.environ, "PYTHONUNBUFFERED": "1",
           "EDGEFLEET_ADMIN_TOKEN": ADMIN_TOKEN}
    return subprocess.Popen([sys.executable, "-m", "edgefleet_cli.main", *args], stdout=log.open("ab"),
                            stderr=subprocess.STDOUT, env=env)


def run_cli(*args: str, server: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "EDGEFLEET_SERVER": server, "EDGEFLEET_TOKEN": ADMIN_TOKEN, "COLUMNS": "200"}
    result = subprocess.run([sys.executable, "-m", "edgefleet_cli.main", *args], capture_output=True, text=True,
                            env=env, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"edgefleet {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


@dataclass
class ServerProcess(Process):
    url: str = ""
    data_dir: Path = Path()
    port: int = 0
    broker_url: str = ""
    args: tuple[str, ...] = ()  # more `edgefleet server run` options (e.g. --shared-subscriptions)

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30)

    def signing_key_hex(self) -> str:
        with self.api() as api:
            return api.get("/api/keys").json()["signing_keys"][0]["public_key"]

    def restart(self) -> None:
        self.stop()
        self.popen = _server_popen(self.data_dir, self.port, self.broker_url, self.log, self.args)
        wait_healthy(self)


def _server_popen(data_dir: Path, port: int, broker_url: str, log: Path, args: tuple[str, ...] = ()) -> subprocess.Popen:
    return cli("server", "run", "--data-dir", str(data_dir), "--port", str(port), "--broker", broker_url, *args,
               log=log)


def wait_healthy(server: ServerProcess) -> None:
    def healthy() -> bool:
        if server.popen.poll() is not None:
            raise AssertionError(f"server exited ({server.popen.returncode}):\n{server.tail()}")
        return httpx.get(f"{server.url}/api/health", timeout=2).json().get("broker") == "connected"

    # a generous bound: on a loaded 2-core machine a server's start (imports, migrations check, broker) took 30 s
    wait_for(healthy, timeout=90, what="the fleet server to answer and connect to the broker")


def spawn_server(workdir: Path, broker_url: str, *args: str, data_dir: Path | None = None,
                 name: str = "server") -> ServerProcess:
    """Start a server process (``--data-dir workdir/server`` unless given: replicas share one; ``args``: more
    options) without waiting for it: :func:`wait_healthy` (several start faster side by side)."""
    port = free_port()
    data_dir, log = data_dir or workdir / "server", workdir / f"{name}.log"
    return ServerProcess(name, _server_popen(data_dir, port, broker_url, log, args), log,
                         url=f"http://127.0.0.1:{port}", data_dir=data_dir, port=port, broker_url=broker_url,
                         args=args)


def start_server(workdir: Path, broker_url: str, *args: str, data_dir: Path | None = None,
                 name: str = "server") -> ServerProcess:
    """:func:`spawn_server`, then wait until it answers and is connected to the broker."""
    server = spawn_server(workdir, broker_url, *args, data_dir=data_dir, name=name)
    wait_healthy(server)
    return server


def start_replicas(workdir: Path, *args: str, count: int, broker_url: str, database_url: str) -> list[ServerProcess]:
    """``count`` servers started at once (their first start races for the keys and the CA), each with its own
    empty data dir (``workdir/replica-<i>``), on one database and one broker (shared subscriptions, each its own
    client id); ``args``: more ``edgefleet server run`` options for every replica."""
    replicas = [spawn_server(workdir, broker_url, "--database-url", database_url, "--shared-subscriptions",
                             "--server-id", f"replica-{i}", *args, data_dir=workdir / f"replica-{i}",
                             name=f"replica-{i}") for i in range(count)]
    try:
        for replica in replicas:
            wait_healthy(replica)
    except BaseException:
        for replica in replicas:
            replica.kill()
        raise
    return replicas


@dataclass
class AgentProcess(Process):
    device_id: str = ""
    config: Path = Path()
    scoring_url: str = ""
    state_dir: Path = Path()

    def restart(self) -> None:
        self.stop()
        self.popen = spawn_agent(self.config, self.log)

    def wait_ready(self) -> None:
        def ready() -> bool:
            if self.popen.poll() is not None:
                raise AssertionError(f"agent {self.device_id} exited ({self.popen.returncode}):\n{self.tail()}")
            return httpx.get(f"{self.scoring_url}/v2/health/live", timeout=2).status_code == 200

        wait_for(ready, timeout=30, what=f"agent {self.device_id} to serve")


FAST_AGENT_SETTINGS = {"heartbeat_interval_s": 1, "telemetry_flush_interval_s": 0.5, "fetch_timeout_s": 3}
"""Agent settings for tests: heartbeats, telemetry and fetch timeouts on a test's time scale."""


def start_agent(workdir: Path, device_id: str, *, broker_url: str, key_hex: str, profile: str = "generic-cpu",
                tags: dict[str, str] | None = None, **settings: object) -> AgentProcess:
    return start_agents(workdir, [device_id], broker_url=broker_url, key_hex=key_hex, profile=profile, tags=tags,
                        **settings)[0]


def start_agents(workdir: Path, device_ids: list[str], *, broker_url: str, key_hex: str,
                 profile: str = "generic-cpu", tags: dict[str, str] | None = None,
                 **settings: object) -> list[AgentProcess]:
    """Start one agent process per id, all at once (their imports overlap), then wait until each serves.

    Each device gets ``workdir/<id>/`` (config, ``state/``, ``agent.log``) and its own free scoring port.
    """
    agents = []
    for device_id in device_ids:
        port = free_port()
        spec = DeviceSpec(device_id, broker_url, [key_hex], port, profile, dict(tags or {}),
                          {**FAST_AGENT_SETTINGS, **settings})
        device_dir = workdir / device_id
        config = write_agent_config(device_dir, spec)
        log = device_dir / "agent.log"
        agents.append(AgentProcess(device_id, spawn_agent(config, log), log, device_id=device_id, config=config,
                                   scoring_url=f"http://127.0.0.1:{port}", state_dir=device_dir / "state"))
    return wait_all_serving(agents)


def wait_all_serving(agents: list[AgentProcess]) -> list[AgentProcess]:
    """Wait until every started agent serves; if one never does, kill them all (no process outlives the test)."""
    try:
        for agent in agents:
            agent.wait_ready()
    except BaseException:
        for agent in agents:
            agent.kill()
        raise
    return agents
