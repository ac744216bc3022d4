"""End to end: server + real Mosquitto + two agents in their own processes, driven by the CLI."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import paho.mqtt.client as mqtt
import pytest

from fleet_protocol import topics
from tests.support.fleet import AgentProcess, ServerProcess, run_cli, start_agent, start_server
from tests.support.net import wait_for

IRIS = Path(__file__).resolve().parents[2] / "modules" / "iris-classifier"


@dataclass
class Fleet:
    server: ServerProcess
    agents: list[AgentProcess]
    broker: object

    def cli(self, *args: str, check: bool = True):
        return run_cli(*args, server=self.server.url, check=check)

    def cli_json(self, *args: str):
        return json.loads(self.cli(*args, "--json").stdout)

    def device(self, device_id: str) -> dict:
        with self.server.api() as api:
            return api.get(f"/api/devices/{device_id}").json()

    def deploy_and_wait(self, ref: str) -> dict:
        deployment = self.cli_json("deploy", "create", ref, "--selector", "site=test", "--wait", "--timeout", "90")
        assert {d["state"] for d in deployment["devices"]} == {"running"}, deployment
        return deployment


@pytest.fixture
def fleet(tmp_path, mosquitto):
    server = start_server(tmp_path, mosquitto.url)
    key = server.signing_key_hex()
    agents = [start_agent(tmp_path, f"e2e-{i}", broker_url=mosquitto.url, key_hex=key, tags={"site": "test"})
              for i in (1, 2)]
    yield Fleet(server, agents, mosquitto)
    for process in [*agents, server]:
        process.stop()


def sample_request() -> dict:
    spec = json.loads((IRIS / "module.json").read_text())
    return json.loads((IRIS / spec["sample"]).read_text())


def infer(agent: AgentProcess, module: str = "iris-classifier", body: dict | None = None) -> dict:
    response = httpx.post(f"{agent.scoring_url}/v2/models/{module}/infer", json=body or sample_request(), timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def outputs(body: dict) -> dict:
    return {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in body["outputs"]}


def test_registered_model_built_deployed_and_scored_on_devices_equals_onnxruntime(fleet):
    record = fleet.cli_json("model", "register", str(IRIS / "model.onnx"), "--name", "iris-raw", "--tag", "team=ml")
    assert (record["name"], record["version"], record["runtime"]) == ("iris-raw", 1, "onnx")
    assert fleet.cli_json("model", "register", str(IRIS / "model.onnx"), "--name", "iris-raw",
                          "--allow-duplicate")["version"] == 2  # the same bytes again: refused without the flag
    bundle = fleet.cli_json("module", "build", str(IRIS))
    fleet.deploy_and_wait("iris-classifier")

    request = sample_request()
    feed = {t["name"]: np.asarray(t["data"], dtype=np.float32).reshape(t["shape"]) for t in request["inputs"]}
    session = ort.InferenceSession(str(IRIS / "model.onnx"), providers=["CPUExecutionProvider"])
    expected = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))
    for agent in fleet.agents:
        body = infer(agent)
        got = outputs(body)
        assert body["model_version"] == str(bundle["version"])
        assert body["parameters"]["scored_on"] == "local"
        np.testing.assert_array_equal(got["label"], expected["label"])
        np.testing.assert_allclose(got["probabilities"], expected["probabilities"], rtol=1e-6)
        assert fleet.device(agent.device_id)["status"] == "online"


def test_version_two_replaces_version_one_and_serves_after_restart_without_broker(fleet):
    first = fleet.cli_json("module", "build", str(IRIS))
    fleet.deploy_and_wait("iris-classifier")
    second = fleet.cli_json("module", "build", str(IRIS))
    assert second["version"] == first["version"] + 1
    fleet.deploy_and_wait(f"iris-classifier:{second['version']}")
    agent = fleet.agents[0]
    active = json.loads((agent.state_dir / "modules" / "iris-classifier" / "active.json").read_text())
    assert (active["version"], active["previous"]["version"]) == (second["version"], first["version"])
    assert infer(agent)["model_version"] == str(second["version"])

    fleet.broker.stop()
    agent.restart()
    agent.wait_ready()
    assert infer(agent)["model_version"] == str(second["version"])


def test_corrupted_chunk_on_the_server_is_refused_and_the_installed_version_keeps_serving(fleet, tmp_path):
    first = fleet.cli_json("module", "build", str(IRIS))
    fleet.deploy_and_wait("iris-classifier")
    edited = tmp_path / "iris-edited"  # a changed entry script: the one chunk the device does not hold yet
    shutil.copytree(IRIS, edited)
    (edited / "main.py").write_text((IRIS / "main.py").read_text() + "\n# version two\n")
    second = fleet.cli_json("module", "build", str(edited))
    with fleet.server.api() as api:
        manifest = api.get(f"/api/bundles/{second['digest']}").json()["manifest"]["signed"]
    entry_chunk = next(f for f in manifest["files"] if f["path"] == manifest["entry"])["chunks"][0]["sha256"]
    chunk_file = fleet.server.data_dir / "chunks" / entry_chunk
    chunk_file.write_bytes(b"\0" * chunk_file.stat().st_size)
    fleet.cli("deploy", "create", f"iris-classifier:{second['version']}", "--selector", "site=test")

    def refused() -> dict | None:
        module = next(m for m in fleet.device("e2e-1")["modules"] if m["name"] == "iris-classifier")
        return module if module.get("error") else None

    module = wait_for(refused, timeout=60, what="the device to report the refused chunk")
    assert module["error"]["category"] in ("verification", "download"), module
    assert module["version"] == first["version"]
    assert infer(fleet.agents[0])["model_version"] == str(first["version"])


def test_telemetry_produced_while_the_broker_is_down_arrives_once(fleet):
    agent = fleet.agents[0]

    def heartbeats() -> list[dict]:
        with fleet.server.api() as api:
            return api.get(f"/api/devices/{agent.device_id}/telemetry", params={"kind": "heartbeat",
                                                                              "limit": 1000}).json()

    wait_for(heartbeats, what="the first heartbeat")
    fleet.broker.stop()
    outage_start = time.time()
    time.sleep(4)
    fleet.broker.start()
    records = wait_for(lambda: [r for r in heartbeats() if _epoch(r["ts"]) > outage_start + 1] and heartbeats(),
                       timeout=30, what="heartbeats from the outage")
    seqs = [r["seq"] for r in records]
    assert len(seqs) == len(set(seqs)), "a telemetry record was stored twice"
    during = [r for r in records if outage_start + 0.5 < _epoch(r["ts"]) < outage_start + 3.5]
    assert len(during) >= 2, f"heartbeats written during the outage were lost: {records}"


def test_malformed_payloads_on_every_topic_are_survived(fleet):
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="e2e-vandal")
    client.connect(fleet.broker.host, fleet.broker.port)
    client.loop_start()
    garbage = [b"", b"\xff\xfe", b"{}", b"[]", b'{"type": "telemetry-batch"}', b"x" * 10_000]
    for device_id in ("e2e-1", "e2e-2"):
        for kind in topics.DEVICE_KINDS:
            for payload in garbage:
                client.publish(topics.device_topic(device_id, kind), payload, qos=1).wait_for_publish(5)
    for payload in garbage:
        client.publish(topics.bundle_chunks_topic("a" * 64), payload, qos=1).wait_for_publish(5)
    client.publish(topics.device_topic("e2e-1", "desired"), b"", retain=True, qos=1).wait_for_publish(5)
    client.loop_stop()
    client.disconnect()

    fleet.cli_json("module", "build", str(IRIS))
    fleet.deploy_and_wait("iris-classifier")
    for agent in fleet.agents:
        assert agent.popen.poll() is None
        infer(agent)
    with fleet.server.api() as api:
        assert api.get("/api/health").json()["malformed_messages"] > 0


def _epoch(ts: str) -> float:
    from fleet_protocol.timestamps import from_iso

    return from_iso(ts).timestamp()
