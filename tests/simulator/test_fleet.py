"""Simulated devices (real agent parts on one MQTT loop) against a real fleet server and Mosquitto."""

from __future__ import annotations

import json
import os

import numpy as np
import onnxruntime as ort
import pytest

from simulators.faults import FaultPlan
from simulators.fleet import SimulatedFleet
from tests.simulator.conftest import IRIS
from tests.support.net import wait_for

FAST = {"heartbeat_interval_s": 1, "telemetry_flush_interval_s": 0.5, "fetch_timeout_s": 2}


def make_fleet(server, tmp_path, count: int, **kwargs) -> SimulatedFleet:
    return SimulatedFleet(server.fleet.config.broker_url, [server.signing_public_key_hex], tmp_path / "devices",
                          [f"sim-{i}" for i in range(count)], profiles=[("generic-cpu", 0.7), ("raspberry-pi-5", 0.3)],
                          tags={"site": "sim"}, settings=FAST, seed=11, **kwargs)


def deploy(api, iris: dict) -> dict:
    # allow_empty: the simulated devices may not have registered yet (and one test deploys while they are cut off)
    return api.post("/api/deployments", json={"module": "iris-classifier", "selector": {"site": "sim"},
                                               "allow_empty": True})


def running_everywhere(api, deployment: dict, count: int) -> bool:
    devices = api.get(f"/api/deployments/{deployment['id']}")["devices"]
    return len(devices) == count and all(d["state"] == "running" for d in devices)


def sample_inputs() -> dict[str, np.ndarray]:
    spec = json.loads((IRIS / "module.json").read_text())
    request = json.loads((IRIS / spec["sample"]).read_text())
    return {t["name"]: np.asarray(t["data"], dtype=np.float32).reshape(t["shape"]) for t in request["inputs"]}


def test_fifty_simulated_devices_register_install_a_deployment_run_it_and_send_heartbeats(server, api, iris,
                                                                                           tmp_path):
    fleet = make_fleet(server, tmp_path, 50)
    fleet.start()
    try:
        assert fleet.wait_connected(60) == 50
        wait_for(lambda: len(api.get("/api/devices")) == 50, timeout=60, what="50 devices registered")
        deployment = deploy(api, iris)
        wait_for(lambda: running_everywhere(api, deployment, 50), timeout=120, what="the module on every device")
        assert fleet.stats()["modules"] == {f"iris-classifier@{iris['version']}": 50}
        assert {device.profile.name for device in fleet.devices.values()} == {"generic-cpu", "raspberry-pi-5"}

        inputs = sample_inputs()
        session = ort.InferenceSession(str(IRIS / "model.onnx"), providers=["CPUExecutionProvider"])
        expected = session.run(None, inputs)[0]
        for device in list(fleet.devices.values())[:5]:
            np.testing.assert_array_equal(device.infer("iris-classifier", inputs).outputs["label"], expected)

        def heartbeat_senders() -> set[str]:
            rows = api.get("/api/telemetry", params={"kind": "heartbeat", "limit": 1000})
            return {row["device_id"] for row in rows}

        wait_for(lambda: heartbeat_senders() == set(fleet.devices), timeout=60, what="a heartbeat from every device")
        assert fleet.stats()["telemetry_sent"] > 0
    finally:
        fleet.stop()
    wait_for(lambda: {d["status"] for d in api.get("/api/devices")} == {"offline"}, timeout=30,
             what="every device's offline status at the server")


def test_fleet_with_dropped_and_delayed_messages_still_converges(server, api, iris, tmp_path):
    fleet = make_fleet(server, tmp_path, 20, faults=["drop=0.1", "delay=20ms"])
    fleet.start()
    try:
        assert fleet.wait_connected(60) == 20
        deployment = deploy(api, iris)
        wait_for(lambda: running_everywhere(api, deployment, 20), timeout=180, what="the module on every device")
        assert fleet.stats()["dropped_messages"] > 0
    finally:
        fleet.stop()


def test_devices_reconnect_and_converge_after_a_network_partition(server, api, iris, tmp_path):
    fleet = make_fleet(server, tmp_path, 5, faults=["partition=2s@1s"])
    fleet.start()
    try:
        wait_for(lambda: fleet.stats()["partitions"] == 1, timeout=30, what="the partition to begin")
        deployment = deploy(api, iris)  # published while the devices are cut off
        wait_for(lambda: running_everywhere(api, deployment, 5), timeout=120, what="the module on every device")
        assert fleet.wait_connected(60) == 5
    finally:
        fleet.stop()


def test_a_crashed_device_restarts_from_its_state_dir_and_serves_without_a_download(server, api, iris, tmp_path):
    fleet = make_fleet(server, tmp_path, 3)
    fleet.start()
    try:
        deployment = deploy(api, iris)
        wait_for(lambda: running_everywhere(api, deployment, 3), timeout=120, what="the module on every device")
        before = fleet.devices["sim-0"]
        assert fleet.crash("sim-0")
        wait_for(lambda: fleet.devices["sim-0"] is not before and fleet.devices["sim-0"].connected, timeout=60,
                 what="the device to restart and reconnect")
        restarted = fleet.devices["sim-0"]
        assert restarted.models == {"iris-classifier": iris["version"]}  # loaded from its state dir at start
        assert restarted.infer("iris-classifier", sample_inputs()).outputs["label"].shape[0] >= 1
        assert fleet.stats()["crashes"] == 1
    finally:
        fleet.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="the disk-full fault mounts a tmpfs, which needs root")
def test_a_device_with_a_full_disk_reports_disk_full_while_the_others_install(server, api, iris, tmp_path):
    fleet = make_fleet(server, tmp_path, 3, faults=["disk-full=sim-1"])
    fleet.start()
    try:
        deploy(api, iris)
        wait_for(lambda: fleet.stats()["modules"] == {f"iris-classifier@{iris['version']}": 2}, timeout=120,
                 what="the module on the two devices with room")

        def disk_full_reported() -> bool:
            status = fleet.devices["sim-1"].reconciler.statuses.get("iris-classifier")
            return status is not None and (status.error or {}).get("code") == "disk_full"

        wait_for(disk_full_reported, timeout=60, what="sim-1 to report disk_full")
        assert fleet.devices["sim-1"].models == {}
    finally:
        fleet.stop()


def test_fault_plan_parses_every_fault_and_refuses_unknown_ones():
    plan = FaultPlan.parse(["drop=0.01", "delay=50ms", "partition=30s@60s", "crash=0.06/min",
                            "disk-full=device-7,device-9", "slow-accelerator=3x"])
    assert plan == FaultPlan(drop=0.01, delay_s=0.05, partitions=((60.0, 30.0),), crash_per_s=0.001,
                             disk_full=frozenset({"device-7", "device-9"}), slow_accelerator=3.0)
    assert not FaultPlan.parse([])
    for bad in ("explode=1", "drop=2", "delay=soon", "crash=1/fortnight", "slow-accelerator=0.5x", "drop"):
        with pytest.raises(ValueError, match="bad fault"):
            FaultPlan.parse([bad])
