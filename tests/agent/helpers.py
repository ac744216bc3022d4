"""Test doubles for the agent suite: tiny ONNX models, signed bundles, and a server played over real MQTT."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import paho.mqtt.client as mqtt
from onnx import TensorProto, helper

from edgefleet_runtime.runtime import Runtime
from fleet_protocol import messages, topics
from fleet_protocol.bundle_file import build_manifest
from fleet_protocol.manifest import BundleManifest
from fleet_protocol.messages import DesiredModule, DesiredState
from fleet_protocol.signing import SigningKey, sign_envelope
from edge_agent.clock import utc_now
from edge_agent.installer import Installer
from firmware_profiles import load_profile
from fleet_protocol.timestamps import to_iso
from fleet_server.keys import new_signing_key
from tests.support.net import wait_for


def linear_model(weights: np.ndarray, bias: np.ndarray, *, input_name: str = "x", output_name: str = "y") -> bytes:
    """ONNX bytes of ``y = x @ W + b`` with a dynamic batch dimension (float32)."""
    n_in, n_out = weights.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", [input_name, "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], [output_name])],
        "linear",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", n_in])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", n_out])],
        initializer=[helper.make_tensor("W", TensorProto.FLOAT, [n_in, n_out], weights.astype(np.float32).ravel()),
                     helper.make_tensor("b", TensorProto.FLOAT, [n_out], bias.astype(np.float32).ravel())],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def weights(seed: int, n_in: int = 4, n_out: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n_in, n_out)).astype(np.float32), rng.normal(size=n_out).astype(np.float32)


@dataclass
class Bundle:
    manifest: BundleManifest
    envelope: dict
    files: dict[str, bytes]

    @property
    def digest(self) -> str:
        return self.manifest.digest

    @property
    def version(self) -> int:
        return self.manifest.version

    def desired(self) -> DesiredModule:
        return DesiredModule(self.manifest.module, self.manifest.version, self.digest, self.envelope)

    def chunks(self) -> dict[str, bytes]:
        out = {}
        for entry in self.manifest.files:
            data = self.files[entry.path]
            offset = 0
            for chunk in entry.chunks:
                out[chunk.sha256] = data[offset:offset + chunk.size]
                offset += chunk.size
        return out


def make_bundle(key: SigningKey, *, module: str = "linear", version: int = 1, seed: int = 1,
                entry: str | None = None, extra_files: dict[str, bytes] | None = None, chunk_size: int = 256,
                sample: bool = False, **manifest_extra) -> Bundle:
    w, b = weights(seed)
    files = {"model.onnx": linear_model(w, b), **(extra_files or {})}
    if entry is not None:
        files["main.py"] = entry.encode()
        manifest_extra["entry"] = "main.py"
    if sample:
        files["sample.json"] = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                                                       "data": [0.1, 0.2, 0.3, 0.4]}]}).encode()
        manifest_extra["sample"] = "sample.json"
    manifest = build_manifest(module=module, version=version, runtime="onnx", model="model.onnx", files=files,
                              created=to_iso(utc_now()), chunk_size=chunk_size, **manifest_extra)
    return Bundle(manifest, sign_envelope(manifest.to_dict(), key), files)


def desired_envelope(key: SigningKey, device_id: str, generation: int, bundles: list[Bundle], *,
                     expires: str | None = None, modules: list[DesiredModule] | None = None) -> dict:
    state = DesiredState(device_id, generation, to_iso(utc_now()),
                         tuple(modules if modules is not None else [b.desired() for b in bundles]), expires=expires)
    return sign_envelope(state.to_dict(), key)


@dataclass
class FakeServer:
    """Plays the fleet server over a real broker: publishes desired state, answers fetch requests."""

    host: str
    port: int
    key: SigningKey = field(default_factory=new_signing_key)
    chunk_store: dict[str, dict[str, bytes]] = field(default_factory=dict)  # digest -> sha -> bytes
    tamper: dict[str, bytes] = field(default_factory=dict)  # sha -> bytes sent instead
    answer_fetches: bool = True
    reported: dict[str, messages.ReportedState] = field(default_factory=dict)
    reported_history: list[messages.ReportedState] = field(default_factory=list)
    status: dict[str, messages.DeviceStatus] = field(default_factory=dict)
    telemetry: list[tuple[str, messages.TelemetryRecord]] = field(default_factory=list)
    fetch_requests: list[messages.FetchRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        # A persistent session, so nothing the agent sends is lost while this client reconnects.
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"fake-server-{self.port}-{id(self)}",
                                  protocol=mqtt.MQTTv311, clean_session=False)
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, u, f, rc, p: [c.subscribe(t, 1) for t in topics.SERVER_SUBSCRIPTIONS]
        self.client.connect(self.host, self.port)
        self.client.loop_start()

    @property
    def key_hex(self) -> str:
        return self.key.public_key.to_hex()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def add_bundle(self, bundle: Bundle) -> Bundle:
        self.chunk_store[bundle.digest] = bundle.chunks()
        return bundle

    def bundle(self, **kwargs) -> Bundle:
        return self.add_bundle(make_bundle(self.key, **kwargs))

    def publish_desired(self, device_id: str, generation: int, bundles: list[Bundle], *,
                        key: SigningKey | None = None, **kwargs) -> dict:
        envelope = desired_envelope(key or self.key, device_id, generation, bundles, **kwargs)
        self.publish_raw(topics.device_topic(device_id, "desired"), messages.encode(envelope), retain=True)
        return envelope

    def publish_raw(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def _on_message(self, client, userdata, message) -> None:
        device_id, kind = topics.parse_device_topic(message.topic)
        if kind == "reported":
            state = messages.parse_reported_state(message.payload)
            with self._lock:
                self.reported[device_id] = state
                self.reported_history.append(state)
        elif kind == "status":
            self.status[device_id] = messages.parse_device_status(message.payload)
        elif kind == "telemetry":
            batch = messages.parse_telemetry_batch(message.payload)
            with self._lock:
                self.telemetry.extend((batch.outbox_id, r) for r in batch.records)
        elif kind == "fetch":
            request = messages.parse_fetch_request(message.payload)
            self.fetch_requests.append(request)
            if not self.answer_fetches:
                return
            store = self.chunk_store.get(request.bundle_digest, {})
            for sha in request.chunks:
                if sha in store:
                    data = self.tamper.get(sha, store[sha])
                    client.publish(topics.bundle_chunks_topic(request.bundle_digest), messages.encode_chunk(data),
                                   qos=1)

    # --- waiting --------------------------------------------------------------------------------

    def module_report(self, device_id: str, name: str) -> messages.ModuleReport | None:
        state = self.reported.get(device_id)
        return next((m for m in state.modules if m.name == name), None) if state else None

    def wait_module(self, device_id: str, name: str, check: Callable[[messages.ModuleReport], bool], *,
                    timeout: float = 30, what: str = "") -> messages.ModuleReport:
        def found():
            report = self.module_report(device_id, name)
            return report if report is not None and check(report) else None

        return wait_for(found, timeout=timeout, what=what or f"{name} on {device_id} to reach the expected state")

    def wait_running(self, device_id: str, name: str, version: int, *, timeout: float = 30) -> messages.ModuleReport:
        return self.wait_module(device_id, name, lambda m: m.state == "running" and m.version == version,
                                timeout=timeout, what=f"{name} v{version} running on {device_id}")

    def records(self, kind: str | None = None) -> list[messages.TelemetryRecord]:
        with self._lock:
            return [r for _, r in self.telemetry if kind is None or r.kind == kind]


def stage(state_dir: Path, bundle: Bundle) -> Path:
    """Put a bundle's chunks where the fetcher would have stored them; return the chunks folder."""
    chunks = state_dir / "staging" / bundle.digest / "chunks"
    chunks.mkdir(parents=True, exist_ok=True)
    for sha, data in bundle.chunks().items():
        (chunks / sha).write_bytes(data)
    return chunks


def serving_runtime(state_dir: Path, bundle: Bundle) -> Runtime:
    """A generic-CPU runtime serving ``bundle``, staged, verified and installed under ``state_dir`` as the agent does."""
    stage(state_dir, bundle)
    runtime = Runtime(load_profile("generic-cpu"))
    runtime.activate(runtime.load(Installer(state_dir).install(bundle.manifest, bundle.envelope)))
    return runtime
