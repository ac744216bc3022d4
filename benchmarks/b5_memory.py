"""B5: RSS of the agent process against a bare process holding the same libraries and the same models.

The agent runs as users run it (``edgefleet agent run``), connected to a real
server and broker, first with no module, then with the sample modules
(``modules/*``: one ONNX model, one LiteRT model) installed and loaded. Each
state is compared like for like:

- idle: the agent with no module against a bare ``import paho.mqtt.client,
  numpy`` (the idle agent has not imported onnxruntime or LiteRT either);
- loaded: the agent with the sample modules against a bare process that
  imports paho and numpy, opens the very same model files in onnxruntime
  (``InferenceSession``) and LiteRT (``Interpreter`` + ``allocate_tensors``)
  and scores each once.

Each figure is the peak RSS over ``idle_seconds`` of sampling. Targets, for
each state: at most 1.3x its bare process and at most 96 MB.

    python -m benchmarks.b5_memory [--idle-seconds S]
"""

from __future__ import annotations

import argparse
import json
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
TARGET_RATIO, TARGET_MB = 1.3, 96.0

# The bare processes: print one JSON line once ready (the models they hold), then sit idle.
BARE_IDLE = """
import json, time
import paho.mqtt.client, numpy
print(json.dumps([]), flush=True)
time.sleep(600)
"""
BARE_LOADED = """
import json, sys, time
import paho.mqtt.client, numpy
import onnxruntime
from ai_edge_litert.interpreter import Interpreter
held, loaded = [], []
for runtime, path in json.loads(sys.argv[1]):
    if runtime == "onnx":
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        feeds = {i.name: numpy.zeros([d if isinstance(d, int) else 1 for d in i.shape], numpy.float32)
                 for i in session.get_inputs()}
        session.run(None, feeds)
        held.append(session)
    else:
        interpreter = Interpreter(model_path=path)
        interpreter.allocate_tensors()
        for detail in interpreter.get_input_details():
            interpreter.set_tensor(detail["index"], numpy.zeros(detail["shape"], detail["dtype"]))
        interpreter.invoke()
        held.append(interpreter)
    loaded.append([runtime, path])
print(json.dumps(loaded), flush=True)
time.sleep(600)
"""


def sample_modules() -> list[dict]:
    """The repository's sample modules: name, runtime and model file of each."""
    found = []
    for folder in sorted((ROOT / "modules").iterdir()):
        if (folder / "module.json").is_file():
            spec = json.loads((folder / "module.json").read_text())
            found.append({"name": spec["name"], "runtime": spec["runtime"], "model": str(folder / spec["model"]),
                          "folder": folder})
    return found


def _peak_rss(pid: int, seconds: float) -> int:
    process, peak, deadline = psutil.Process(pid), 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        peak = max(peak, process.memory_info().rss)
        time.sleep(0.2)
    return peak


def bare_rss(script: str, idle_s: float, *args: str) -> tuple[int, list]:
    """Peak RSS of a bare process running ``script`` once it is ready, and what it says it holds."""
    process = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE)
    try:
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"the bare process exited with {process.wait()} before it was ready")
        return _peak_rss(process.pid, idle_s), json.loads(line)
    finally:
        process.kill()
        process.wait()


def agent_rss(workdir: Path, idle_s: float, modules: list[dict]) -> tuple[int, int]:
    """RSS of an idle agent with no module, then with ``modules`` installed and loaded."""
    server = ServerThread(ServerConfig(data_dir=workdir / "server", port=0, embedded_broker_port=0)).start()
    client = ApiClient(server.url, server.admin_token)
    spec = DeviceSpec("bench-mem", server.broker_url, [server.signing_public_key_hex], 0)
    agent = spawn_agent(write_agent_config(workdir / "device", spec), workdir / "device" / "agent.log")
    try:
        _wait(lambda: any(d["id"] == "bench-mem" and d["status"] == "online" for d in client.get("/api/devices")))
        empty = _peak_rss(agent.pid, idle_s)
        names = [build_module(client, m["folder"])["module"] for m in modules]
        for name in names:
            client.post("/api/deployments", json={"module": name, "devices": ["bench-mem"]})
        _wait(lambda: {m["name"] for m in client.get("/api/devices/bench-mem")["modules"]
                       if m["state"] == "running"} == set(names))
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


def compare(agent_bytes: int, bare_bytes: int) -> dict:
    """One state's figures: both sides in MB, their ratio, and whether both targets are met."""
    agent_mb, bare_mb = agent_bytes / MB, bare_bytes / MB
    ratio = agent_mb / bare_mb
    return {"agent_rss_mb": agent_mb, "bare_rss_mb": bare_mb, "ratio": ratio,
            "met": ratio <= TARGET_RATIO and agent_mb <= TARGET_MB}


def run(idle_s: float = 10.0, *, publish: bool = True) -> dict:
    modules = sample_modules()
    models = json.dumps([[m["runtime"], m["model"]] for m in modules])
    bare_idle, _ = bare_rss(BARE_IDLE, idle_s)
    bare_loaded, bare_held = bare_rss(BARE_LOADED, idle_s, models)
    with tempfile.TemporaryDirectory() as tmp:
        empty, loaded = agent_rss(Path(tmp), idle_s, modules)
    result = {"idle": {**compare(empty, bare_idle), "reference": "bare `import paho.mqtt.client, numpy`"},
              "loaded": {**compare(loaded, bare_loaded), "modules": [m["name"] for m in modules],
                         "reference_holds": bare_held,
                         "reference": "bare process holding the same models in onnxruntime and LiteRT"},
              "idle_seconds": idle_s, "targets": {"ratio": TARGET_RATIO, "rss_mb": TARGET_MB}}
    if publish:
        write_result("B5", result)
        update_readme_rows(_rows(result))
    return result


def _rows(result: dict) -> dict[str, str]:
    idle, loaded = result["idle"], result["loaded"]

    def row(bench_id: str, what: str, side: dict, reference: str) -> str:
        return (f"| {bench_id} | {what} | {side['agent_rss_mb']:.1f} MB | {side['bare_rss_mb']:.1f} MB {reference} | "
                f"{side['ratio']:.2f}x | ≤ 1.3x and ≤ 96 MB | {'yes' if side['met'] else 'no'} |")

    return {"B5": row("B5", "agent RSS, idle (no module)", idle, "bare `import paho.mqtt.client, numpy`"),
            "B5-loaded": row("B5-loaded", f"agent RSS with the {len(loaded['modules'])} sample modules loaded "
                             f"({', '.join(loaded['modules'])})", loaded,
                             "bare process holding the same models (onnxruntime session + LiteRT interpreter, "
                             "paho, numpy)")}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    out = run(parser.parse_args().idle_seconds)
    for state in ("idle", "loaded"):
        side = out[state]
        print(f"{state}: agent {side['agent_rss_mb']:.1f} MB, bare {side['bare_rss_mb']:.1f} MB "
              f"({side['reference']}): {side['ratio']:.2f}x, met {side['met']}")
