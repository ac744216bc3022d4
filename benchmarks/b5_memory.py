"""B5: idle RSS of the agent process vs a bare ``import onnxruntime, paho.mqtt.client, numpy``.

The agent runs as users run it (``edgefleet agent run``), connected to a real
server and broker, first with no module, then with the sample modules
installed and loaded. Targets: at most 1.3x the bare process and at most 96 MB.

    python -m benchmarks.b5_memory [--idle-seconds S]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from benchmarks.report import ROOT, update_readme_rows, write_result
from edgefleet_cli.client import ApiClient
from edgefleet_cli.commands.module import build_module
from fleet_server.config import ServerConfig
from fleet_server.runner import ServerThread
from simulators.devices import DeviceSpec, spawn_agent, write_agent_config

MB = 1024 * 1024
BARE = "import onnxruntime, paho.mqtt.client, numpy, time; print('ready', flush=True); time.sleep(600)"


def _peak_rss(pid: int, seconds: float) -> int:
    process, peak, deadline = psutil.Process(pid), 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        peak = max(peak, process.memory_info().rss)
        time.sleep(0.2)
    return peak


def bare_rss(idle_s: float) -> int:
    process = subprocess.Popen([sys.executable, "-c", BARE], stdout=subprocess.PIPE)
    try:
        process.stdout.readline()
        return _peak_rss(process.pid, idle_s)
    finally:
        process.kill()
        process.wait()


def agent_rss(workdir: Path, idle_s: float) -> tuple[int, int]:
    """RSS of an idle agent with no module, then with the sample modules loaded."""
    server = ServerThread(ServerConfig(data_dir=workdir / "server", port=0, embedded_broker_port=0)).start()
    client = ApiClient(server.url, server.admin_token)
    spec = DeviceSpec("bench-mem", server.broker_url, [server.signing_public_key_hex], 0)
    agent = spawn_agent(write_agent_config(workdir / "device", spec), workdir / "device" / "agent.log")
    try:
        _wait(lambda: any(d["id"] == "bench-mem" and d["status"] == "online" for d in client.get("/api/devices")))
        empty = _peak_rss(agent.pid, idle_s)
        modules = [build_module(client, folder)["module"]
                   for folder in sorted((ROOT / "modules").iterdir()) if (folder / "module.json").is_file()]
        for module in modules:
            client.post("/api/deployments", json={"module": module, "devices": ["bench-mem"]})
        _wait(lambda: {m["name"] for m in client.get("/api/devices/bench-mem")["modules"]
                       if m["state"] == "running"} == set(modules))
        loaded = _peak_rss(agent.pid, idle_s)
        return empty, loaded
    finally:
        agent.terminate()
        agent.wait(10)
        server.stop()


def _wait(check, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError("the benchmark agent did not reach the expected state")
        time.sleep(0.2)


def run(idle_s: float = 10.0, *, publish: bool = True) -> dict:
    bare = bare_rss(idle_s)
    with tempfile.TemporaryDirectory() as tmp:
        empty, loaded = agent_rss(Path(tmp), idle_s)
    result = {"bare_rss_mb": bare / MB, "agent_idle_rss_mb": empty / MB, "agent_loaded_rss_mb": loaded / MB,
              "ratio_idle": empty / bare, "ratio_loaded": loaded / bare, "idle_seconds": idle_s,
              "targets": {"ratio": 1.3, "rss_mb": 96}}
    if publish:
        write_result("B5", result)
        met = result["ratio_idle"] <= 1.3 and result["agent_idle_rss_mb"] <= 96
        update_readme_rows({"B5": (
            f"| B5 | agent idle RSS (with the 2 sample modules loaded) | {result['agent_idle_rss_mb']:.1f} MB "
            f"({result['agent_loaded_rss_mb']:.1f} MB) | {result['bare_rss_mb']:.1f} MB bare `import onnxruntime, "
            f"paho, numpy` | {result['ratio_idle']:.2f}x ({result['ratio_loaded']:.2f}x) | ≤ 1.3x and ≤ 96 MB | "
            f"{'yes' if met else 'no'} |")})
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    out = run(parser.parse_args().idle_seconds)
    print({k: round(v, 2) if isinstance(v, float) else v for k, v in out.items()})
