"""A real fleet for the root-of-trust and freeze tests: Mosquitto, the server in a thread, and one agent in
process that enrolled through ``edge_agent.enroll`` (so it holds the server's root, not fixed keys)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import httpx
import numpy as np
import paho.mqtt.client as mqtt

from edge_agent.agent import Agent
from edge_agent.config import AgentConfig, load_config
from edge_agent.enroll import enroll
from fleet_protocol import messages, topics
from fleet_protocol.signing import SigningKey, sign_envelope
from fleet_server.config import ServerConfig
from fleet_server.keys import signing_key_path
from fleet_server.runner import ServerThread
from fleet_server.store import devices as device_store
from tests.server.builders import tiny_onnx
from tests.support.fleet import ADMIN_TOKEN
from tests.support.mosquitto import Mosquitto
from tests.support.net import free_port, wait_for

DEVICE = "cam-1"
MODULE = "scale"


class TrustFleet:
    def __init__(self, workdir: Path, broker: Mosquitto, **server_settings):
        self.workdir = workdir
        self.broker = broker
        self.config = ServerConfig(data_dir=workdir / "server", port=free_port(), broker_url=broker.url,
                                   **server_settings)
        self.server = ServerThread(self.config).start()
        self.api = httpx.Client(base_url=self.server.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                                timeout=30)
        self.agent_config = self._enroll()
        self.agent: Agent | None = None

    @property
    def fleet(self):
        return self.server.fleet

    def _enroll(self) -> AgentConfig:
        created = self.api.post("/api/enrollments", json={"device_id": DEVICE})
        created.raise_for_status()
        path = enroll(server_url=self.server.url, token=created.json()["token"], state_dir=self.workdir / "agent",
                      config_out=self.workdir / "agent.toml")
        # this broker is plain MQTT: the enrolled config (TLS files and all) connects without the certificate
        return dataclasses.replace(load_config(path), scoring_port=0, heartbeat_interval_s=0.3,
                                   telemetry_flush_interval_s=0.1, keepalive_s=5)

    def start_agent(self) -> Agent:
        self.agent = Agent(self.agent_config)
        self.agent.start()
        return self.agent

    def stop_agent(self) -> None:
        self.agent.stop()
        self.agent = None

    def bundle(self, scale: float) -> dict:
        """A new model version in a new bundle, signed by the server's current key: its detail (with manifest)."""
        self.api.post(f"/api/models/{MODULE}", files={"file": ("m.onnx", tiny_onnx(scale))}).raise_for_status()
        bundle = self.api.post("/api/bundles/from-model", json={"model": MODULE})
        bundle.raise_for_status()
        return self.api.get(f"/api/bundles/{bundle.json()['digest']}").json()

    def deploy(self, scale: float) -> int:
        """A new bundle of the module, deployed to the device; its version."""
        version = self.bundle(scale)["version"]
        self.api.post("/api/deployments", json={"module": MODULE, "version": version,
                                                "devices": [DEVICE]}).raise_for_status()
        return version

    def wait_serving(self, version: int) -> None:
        wait_for(lambda: self.agent.models.get(MODULE) == version, timeout=30, what=f"{MODULE} v{version} served")

    def predict(self) -> int:
        """Score one request on the device; the version that answered."""
        return self.agent.infer(MODULE, {"x": np.ones((1, 4), dtype=np.float32)}).model_version

    def reported(self) -> dict:
        return self.api.get(f"/api/devices/{DEVICE}").json()["reported"] or {}

    def signing_key(self) -> SigningKey:
        """The server's signing key as it is on disk now (read before a rotation: the key an attacker kept)."""
        return SigningKey.from_pem(signing_key_path(self.config.data_dir).read_bytes())

    def stored_desired(self) -> dict:
        return device_store.get_device(db=self.fleet.db, device_id=DEVICE)["desired_envelope"]["signed"]

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish as an attacker on the broker would (not retained: the server's messages stay)."""
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        client.connect(self.broker.host, self.broker.port)
        client.loop_start()
        try:
            client.publish(topic, payload, qos=1).wait_for_publish(timeout=10)
        finally:
            client.loop_stop()
            client.disconnect()

    def publish_desired(self, signed: dict, key: SigningKey) -> None:
        self.publish(topics.device_topic(DEVICE, "desired"), messages.encode(sign_envelope(signed, key)))

    def publish_roots(self, roots: list[dict]) -> None:
        self.publish(topics.ROOT_TOPIC, messages.encode_root_chain(roots))

    def close(self) -> None:
        if self.agent is not None:
            self.agent.stop()
        self.api.close()
        self.server.stop()

