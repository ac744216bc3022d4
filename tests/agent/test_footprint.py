"""The agent's process holds what the agent runs: `edgefleet agent run` keeps no CLI or server code (B5).

The agent runs through its real entry path (``python -m edgefleet_cli.main
agent run``, as :func:`simulators.devices.spawn_agent` starts it) against a
real Mosquitto, installs and serves a signed ONNX module from a fake server
and stops on SIGTERM; a ``sitecustomize`` put on its path lists the
``sys.modules`` of the process as it exits.
"""

from __future__ import annotations

import json
from pathlib import Path

from simulators.devices import DeviceSpec, spawn_agent, write_agent_config

REPO = Path(__file__).resolve().parents[2]

# What the agent never uses, by top-level package: the CLI's framework (Typer, click, the pydantic Typer coerces
# parameters with, rich), the server and its web stack, the CLI's HTTP client, training and graph-building
# libraries, and the optional extras nobody asked it for.
NOT_FOR_THE_AGENT = ("typer", "click", "pydantic", "rich", "pygments", "fleet_server", "simulators", "fastapi",
                     "starlette", "uvicorn", "httpx", "sklearn", "skl2onnx", "scipy", "onnx", "grpc",
                     "prometheus_client", "docker", "sqlite_utils", "amqtt")

LIST_MODULES_AT_EXIT = """
import atexit, json, os, sys

def _list_modules():
    with open(os.environ["EDGEFLEET_TEST_MODULES_OUT"], "w") as out:
        json.dump(sorted(sys.modules), out)

atexit.register(_list_modules)
"""


def test_agent_run_process_holds_no_cli_framework_server_or_training_code(tmp_path, broker, server):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(LIST_MODULES_AT_EXIT)
    listing = tmp_path / "modules.json"
    spec = DeviceSpec("dev-lean", broker.url, [server.key_hex], 0, settings={"heartbeat_interval_s": 0.5})
    bundle = server.bundle(module="linear")
    agent = spawn_agent(write_agent_config(tmp_path / "device", spec), tmp_path / "agent.log",
                        env={"PYTHONPATH": f"{hook}:{REPO}", "EDGEFLEET_TEST_MODULES_OUT": str(listing)})
    try:
        server.publish_desired("dev-lean", 1, [bundle])
        server.wait_running("dev-lean", "linear", bundle.version)  # loaded and serving: onnxruntime is in
    finally:
        agent.terminate()
        assert agent.wait(30) == 0, (tmp_path / "agent.log").read_text()[-2000:]
    loaded = set(json.loads(listing.read_text()))
    assert {"onnxruntime", "edge_agent.agent"} <= loaded  # the listing is that of the running agent
    unneeded = sorted({name.split(".")[0] for name in loaded} & set(NOT_FOR_THE_AGENT))
    cli = sorted(name for name in loaded if name.startswith("edgefleet_cli.") and name not in
                 ("edgefleet_cli.agent_process", "edgefleet_cli.output"))
    assert not unneeded and not cli, (unneeded, cli)
