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
from tests.support.net import wait_for

REPO = Path(__file__).resolve().parents[2]

# What the agent never uses, by top-level package: the CLI's framework (Typer, click, the pydantic Typer coerces
# parameters with, rich), the server and its web stack, the CLI's HTTP client, training and graph-building
# libraries, and the optional extras nobody asked it for.
NOT_FOR_THE_AGENT = ("typer", "click", "pydantic", "rich", "pygments", "fleet_server", "simulators", "fastapi",
                     "starlette", "uvicorn", "httpx", "sklearn", "skl2onnx", "scipy", "onnx", "grpc",
                     "prometheus_client", "docker", "sqlalchemy", "alembic", "psycopg", "amqtt")

LIST_MODULES_AT_EXIT = """
import atexit, json, os, sys

def _list_modules():
    with open(os.environ["EDGEFLEET_TEST_MODULES_OUT"], "w") as out:
        json.dump(sorted(sys.modules), out)

atexit.register(_list_modules)
"""


# What an idle agent (no module yet, no TLS certificate to check) has no use for: a model runtime, and the
# cryptography package, which it needs first to verify a signed desired state (about 7.5 MB resident, B5).
NOT_FOR_AN_IDLE_AGENT = ("onnxruntime", "ai_edge_litert", "tflite_runtime", "cryptography")


def spawn_listed(tmp_path: Path, spec: DeviceSpec):
    """The agent through its real entry path, with a hook that writes its ``sys.modules`` when it exits."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(LIST_MODULES_AT_EXIT)
    listing = tmp_path / "modules.json"
    agent = spawn_agent(write_agent_config(tmp_path / "device", spec), tmp_path / "agent.log",
                        env={"PYTHONPATH": f"{hook}:{REPO}", "EDGEFLEET_TEST_MODULES_OUT": str(listing)})
    return agent, listing


def test_agent_run_process_holds_no_cli_framework_server_or_training_code(tmp_path, broker, server):
    spec = DeviceSpec("dev-lean", broker.url, [server.key_hex], 0, settings={"heartbeat_interval_s": 0.5})
    bundle = server.bundle(module="linear")
    agent, listing = spawn_listed(tmp_path, spec)
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


def test_idle_agent_holds_no_model_runtime_and_no_cryptography_until_it_needs_them(tmp_path, broker, server):
    spec = DeviceSpec("dev-idle", broker.url, [server.key_hex], 0, settings={"heartbeat_interval_s": 0.5})
    agent, listing = spawn_listed(tmp_path, spec)
    try:  # online, reporting and sending telemetry: everything an idle agent does
        wait_for(lambda: "dev-idle" in server.reported and server.records(), timeout=30,
                 what="the idle agent's reported state and telemetry")
    finally:
        agent.terminate()
        assert agent.wait(30) == 0, (tmp_path / "agent.log").read_text()[-2000:]
    loaded = set(json.loads(listing.read_text()))
    assert {"edge_agent.agent", "edgefleet_runtime.runtime", "paho"} <= loaded
    assert sorted({name.split(".")[0] for name in loaded} & set(NOT_FOR_AN_IDLE_AGENT)) == []
