"""A small, varied fleet put into a running server the way real data arrives.

Devices are registered through ``POST /api/devices`` or appear by their
status messages; reported state and telemetry are published over MQTT to the
server's embedded broker, exactly as agents publish them. A tiny ONNX model
is registered, bundled and deployed to two devices: one runs it, one reports
a failed health check.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import httpx

from fleet_protocol import messages, topics
from fleet_protocol.messages import DeviceStatus, ModuleReport, ReportedState, TelemetryBatch, TelemetryRecord
from fleet_protocol.timestamps import to_iso
from fleet_server.clock import utc_now
from tests.server.builders import tiny_onnx
from tests.server.mqtt_device import FakeDevice
from tests.support.net import wait_for

HEALTH_ERROR = {"code": "health_check_failed", "category": "health",
                "message": "sample inference returned NaN in output 'y'"}


@dataclass
class FleetData:
    bundle_digest: str
    deployment_id: int
    live_device: str = "gate-07"  # online; the live-update test takes it offline
    offline_device: str = "old-01"


def status(device_id: str, state: str, **extra) -> bytes:
    return messages.encode(DeviceStatus(device_id, state, ts=to_iso(utc_now()), agent_version="0.1.0",
                                        **extra).to_dict())


def reported(device_id: str, profile: str, modules: list[ModuleReport]) -> bytes:
    return messages.encode(ReportedState(device_id, 1, to_iso(utc_now()), tuple(modules), agent_version="0.1.0",
                                         profile=profile).to_dict())


def telemetry(device_id: str, *, minutes: int = 15) -> bytes:
    """Heartbeats and model stats every 30 s over the last ``minutes``, plus install events and cloud fallbacks."""
    start = utc_now() - timedelta(minutes=minutes)
    records, seq = [], 0

    def add(offset_s: int, kind: str, data: dict) -> None:
        nonlocal seq
        seq += 1
        records.append(TelemetryRecord(seq, to_iso(start + timedelta(seconds=offset_s)), kind, data))

    add(0, "event", {"event": "install_started", "module": "scaler", "version": 1, "digest": "0" * 64})
    add(5, "event", {"event": "install_succeeded", "module": "scaler", "version": 1, "accelerator": "gpu"})
    for step in range(minutes * 2):
        offset = 30 * step + 10
        add(offset, "heartbeat", {"uptime_s": offset, "cpu_percent": 20 + (step * 7) % 45,
                                  "agent_cpu_percent": 3 + step % 4, "rss_bytes": (48 + step % 5) * 1024 * 1024,
                                  "memory_percent": 38 + step % 9, "disk_free_bytes": 9 * 1024**3,
                                  "outbox_records": 0, "malformed_messages": 0, "dropped_records": 0, "modules": 1,
                                  "temperature_c": 51 + step % 6})
        requests = 80 + (step * 13) % 60
        add(offset + 1, "model_stats", {"model": "scaler", "version": 1, "accelerator": "gpu", "requests": requests,
                                        "errors": 1 if step % 10 == 3 else 0,
                                        "latency_us": {"buckets": [[256, requests]], "p50": 180 + step % 30,
                                                       "p95": 900 + (step * 37) % 600}})
    # two heartbeats' fallback counts, as edge_agent.offload.Offload.take_records writes them
    add(60, "fallback", {"model": "scaler", "reasons": {"low_confidence": {"cloud": 5, "local": 1},
                                                        "batch_too_large": {"cloud": 2}}})
    add(90, "fallback", {"model": "scaler", "reasons": {"low_confidence": {"cloud": 3, "local": 2}}})
    return messages.encode(TelemetryBatch(device_id, "outbox-1", tuple(records)).to_dict())


class Seeder:
    """The real API with ``token`` and one fake device on the broker: how the data modules build their fleets."""

    def __init__(self, url: str, token: str, broker_url: str, client_id: str):
        self.api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        self.device = FakeDevice(broker_url, client_id)

    def __enter__(self) -> Seeder:
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.device.close()
        finally:
            self.api.close()

    def post(self, path: str, *, expect: int = 201, **kwargs) -> dict:
        response = self.api.post(path, **kwargs)
        assert response.status_code == expect, response.text
        return response.json()

    def online(self, device_id: str, profile: str, tags: dict[str, str]) -> None:
        self.device.publish(topics.device_topic(device_id, "status"),
                            status(device_id, "online", profile=profile, tags=tags), retain=True)

    def report(self, device_id: str, profile: str, module: ModuleReport) -> None:
        self.device.publish(topics.device_topic(device_id, "reported"), reported(device_id, profile, [module]),
                            retain=True)

    def scaler_v1_and_v2(self) -> tuple[str, str]:
        """Two versions of a tiny ``scaler`` model registered and bundled; their bundle digests."""
        self.post("/api/models/scaler", files={"file": ("scaler.onnx", tiny_onnx())})
        self.post("/api/models/scaler", files={"file": ("scaler.onnx", tiny_onnx(3.0))})
        return tuple(self.post("/api/bundles/from-model", json={"model": "scaler", "version": version})["digest"]
                     for version in (1, 2))

    def wait_for_modules(self, count: int, what: str) -> None:
        wait_for(lambda: len([d for d in self.api.get("/api/devices").json() if d["modules"]]) == count,
                 timeout=30, what=what)

    def wait_for_variants(self, deployment_id: int) -> None:
        wait_for(lambda: all(v["requests"] for v in self.api.get(f"/api/deployments/{deployment_id}/variants").json()),
                 timeout=30, what="both A/B variants to have statistics")


def publish_status(broker_url: str, device_id: str, state: str, **extra) -> None:
    device = FakeDevice(broker_url, f"browser-test-{device_id}-{state}")
    try:
        device.publish(topics.device_topic(device_id, "status"), status(device_id, state, **extra), retain=True)
    finally:
        device.close()


def populate(url: str, token: str, broker_url: str) -> FleetData:
    with Seeder(url, token, broker_url, "browser-test-seeder") as seed:
        post, device = seed.post, seed.device
        post("/api/models/scaler", files={"file": ("scaler.onnx", tiny_onnx())},
             data={"tags": '{"team": "vision", "stage": "prod"}', "properties": '{"owner": "ml-platform"}'})
        post("/api/models/scaler", files={"file": ("scaler.onnx", tiny_onnx(3.0))}, data={"tags": '{"team": "vision"}'})
        post("/api/models/anomaly", files={"file": ("anomaly.onnx", tiny_onnx(0.5, inputs=8))})
        bundle = post("/api/bundles/from-model", json={"model": "scaler", "version": 1})
        post("/api/devices", json={"id": "cam-01", "name": "Loading dock camera", "tags": {"site": "lab", "tier": "a"}})
        post("/api/devices", json={"id": "sensor-09", "tags": {"site": "depot"}})

        for device_id, profile, tags in (("cam-01", "jetson-orin-nano", {}),
                                         ("cam-02", "raspberry-pi-5", {"site": "depot", "tier": "b"}),
                                         ("gate-07", "kria-kv260", {"site": "gate"}),
                                         ("old-01", "generic-cpu", {"site": "lab"})):
            device.publish(topics.device_topic(device_id, "status"),
                           status(device_id, "online", profile=profile, tags=tags,
                                  scoring_url=f"http://{device_id}.local:8090"), retain=True)
        digest = bundle["digest"]
        seed.report("cam-01", "jetson-orin-nano", ModuleReport("scaler", "running", 1, digest, accelerator="gpu"))
        seed.report("cam-02", "raspberry-pi-5", ModuleReport("scaler", "failed", None, None, 1, digest,
                                                             error=HEALTH_ERROR))
        device.publish(topics.device_topic("cam-01", "telemetry"), telemetry("cam-01"))
        device.publish(topics.device_topic("old-01", "status"), status("old-01", "offline"), retain=True)

        def settled() -> bool:
            devices = {d["id"]: d for d in seed.api.get("/api/devices").json()}
            beats = seed.api.get("/api/devices/cam-01/telemetry", params={"kind": "heartbeat"}).json()
            return (len(devices) == 5 and devices["old-01"]["status"] == "offline"
                    and devices["cam-02"]["modules"] and devices["cam-01"]["modules"] and len(beats) > 1)

        wait_for(settled, timeout=30, what="the seeded devices, states and telemetry to reach the server")
        deployment = post("/api/deployments", json={"module": "scaler", "devices": ["cam-01", "cam-02"]})
    return FleetData(bundle_digest=bundle["digest"], deployment_id=deployment["id"])
