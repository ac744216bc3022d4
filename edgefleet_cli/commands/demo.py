"""``edgefleet demo``: the whole system on one machine, on embedded defaults.

Starts the fleet server with its embedded MQTT broker and SQLite store,
starts simulated devices that run the real agent (one process each, own
state directory and firmware profile), builds the sample modules into signed
bundles, deploys them to every device, and prints a prediction made on a
device. Its state lives in ``--workdir``, wiped at each start.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Annotated

import httpx
import typer

from simulators.devices import DeviceSpec, spawn_agent, write_agent_config

from ..client import ApiClient
from ..errors import CliError, require_extra
from ..output import console, print_table
from .module import build_module

REPO_MODULES = Path(__file__).resolve().parents[2] / "modules"
DEVICES = (("demo-cpu-1", "generic-cpu", "site=lab"), ("demo-pi-1", "raspberry-pi-5", "site=field"),
           ("demo-jetson-1", "jetson-orin-nano", "site=field"))


def demo(
    workdir: Annotated[Path, typer.Option(help="Demo state (wiped at start)")] = Path(".demo"),
    port: Annotated[int, typer.Option(help="API and dashboard port")] = 8080,
    broker_port: Annotated[int, typer.Option(help="Embedded MQTT broker port")] = 1883,
    devices: Annotated[int, typer.Option(min=1, max=len(DEVICES), help="Simulated devices")] = 3,
    modules_dir: Annotated[Path, typer.Option("--modules", help="Folder of sample modules")] = REPO_MODULES,
    once: Annotated[bool, typer.Option("--once", help="Exit after the sample prediction (smoke test)")] = False,
) -> None:
    """Run server, broker and simulated devices with the sample models; Ctrl-C stops everything."""
    require_extra("server")
    from fleet_server.config import ServerConfig
    from fleet_server.runner import ServerThread

    if "EDGEFLEET_LOG_LEVEL" not in os.environ:
        logging.getLogger().setLevel(logging.WARNING)  # the demo prints its own progress
    for wanted in (port, broker_port):
        _require_free_port(wanted)
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    server = ServerThread(ServerConfig(data_dir=workdir / "server", port=port, embedded_broker_port=broker_port))
    agents: list[subprocess.Popen] = []
    try:
        with console.status("starting the fleet server and its embedded broker…"):
            server.start()
        client = ApiClient(server.url, server.admin_token)
        with console.status(f"starting {devices} simulated devices…"):
            for device_id, profile, tags in DEVICES[:devices]:
                agents.append(_start_agent(workdir, device_id, profile, tags, server))
            _wait(lambda: _online(client) >= devices, 60, "devices to come online", agents)
        module_names = []
        for folder in sorted(p for p in modules_dir.iterdir() if (p / "module.json").is_file()):
            bundle = build_module(client, folder)
            console.print(f"built [bold]{bundle['module']} v{bundle['version']}[/bold] ({bundle['size']} bytes, "
                          f"signed, digest {bundle['digest'][:12]})")
            client.post("/api/deployments", json={"module": bundle["module"], "selector": {"demo": "true"}})
            module_names.append(bundle["module"])
        with console.status("devices are fetching, verifying and installing the bundles…"):
            _wait(lambda: _all_running(client, module_names, devices), 120, "every device to run every module",
                  agents)
        first_device = DEVICES[0][0]
        prediction = _sample_prediction(client, first_device, modules_dir / module_names[0], module_names[0])
        fleet = client.get("/api/devices")
        print_table("Devices", ["device", "profile", "status", "modules (version, accelerator)"],
                    [(d["id"], d.get("profile"), d["status"],
                      ", ".join(f"{m['name']} v{m.get('version')} on {m.get('accelerator')}" for m in d["modules"]))
                     for d in fleet])
        scoring = ", ".join(f"{d['id']} {d.get('scoring_url')}" for d in fleet)
        console.print(f"\n[bold green]edgefleet demo is running[/bold green]\n"
                      f"  API and dashboard  {server.url}   (OpenAPI: {server.url}/docs)\n"
                      f"  admin token        {server.admin_token}\n"
                      f"  MQTT broker        {server.broker_url}\n"
                      f"  devices            {scoring}   (their scoring APIs: /v2/models/..., /metrics)\n"
                      f"  try                EDGEFLEET_TOKEN={server.admin_token} edgefleet device list "
                      f"--server {server.url}\n"
                      f"\nsample prediction from {first_device} ({module_names[0]}):\n{prediction}", soft_wrap=True)
        if once:
            return
        console.print("\npress Ctrl-C to stop")
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        console.print("stopping devices and server…")
        for process in agents:
            process.send_signal(signal.SIGTERM)
        for process in agents:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        server.stop()


def _require_free_port(port: int) -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            raise CliError(f"port {port} is in use; pick others with --port / --broker-port") from None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_agent(workdir: Path, device_id: str, profile: str, tags: str, server) -> subprocess.Popen:
    device_dir = workdir / "devices" / device_id
    tag_pairs = dict(pair.split("=", 1) for pair in tags.split(",")) | {"demo": "true"}
    spec = DeviceSpec(device_id, server.broker_url, [server.signing_public_key_hex], _free_port(), profile,
                      tag_pairs, {"heartbeat_interval_s": 10, "telemetry_flush_interval_s": 2})
    return spawn_agent(write_agent_config(device_dir, spec), device_dir / "agent.log")


def _wait(check, timeout: float, what: str, agents: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        dead = [p for p in agents if p.poll() is not None]
        if dead:
            raise CliError(f"a simulated device exited (code {dead[0].returncode}); see its agent.log under "
                           f"the demo workdir")
        if time.monotonic() > deadline:
            raise CliError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.3)


def _online(client: ApiClient) -> int:
    return sum(1 for d in client.get("/api/devices") if d["status"] == "online")


def _all_running(client: ApiClient, modules: list[str], devices: int) -> bool:
    running = [{m["name"] for m in d.get("modules") or [] if m["state"] == "running"} for d in client.get("/api/devices")]
    return len(running) >= devices and all(set(modules) <= names for names in running)


def _sample_prediction(client: ApiClient, device_id: str, module_dir: Path, module: str) -> str:
    device = client.get(f"/api/devices/{device_id}")
    spec = json.loads((module_dir / "module.json").read_text())
    sample = json.loads((module_dir / spec["sample"]).read_text())
    response = httpx.post(f"{device['scoring_url']}/v2/models/{module}/infer", json=sample, timeout=10)
    if response.status_code != 200:
        raise CliError(f"device {device_id} refused the sample prediction: {response.text}")
    body = response.json()
    lines = [f"  {o['name']:<14} {o['datatype']:<6} {o['shape']}  {o['data']}" for o in body["outputs"]]
    return "\n".join([f"  input          {json.dumps(sample['inputs'][0]['data'])}", *lines,
                      f"  parameters     {json.dumps(body.get('parameters', {}))}"])
