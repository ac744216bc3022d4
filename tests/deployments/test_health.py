"""Health-gated installs and crash loops on real in-process agents: the device decides, without the server."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgefleet_runtime.health import CrashWatch, HealthCheckError, HealthPolicy, gate, restart_delay_s
from edgefleet_runtime.runtime import ModelNotFound, ModuleError
from tests.server.builders import module_files, tar_gz, tiny_onnx
from tests.support.net import wait_for

X = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
SLOW_RUN = b"import time\ndef init(context):\n    global model\n    model = context.model\n" \
           b"def run(inputs):\n    time.sleep(0.03)\n    return model.run(inputs)\n"
FLAKY_CHECK = b"attempts = 0\ndef health_check(context):\n    global attempts\n    attempts += 1\n" \
              b"    return attempts >= 3\n"
FAILING_CHECK = b"def health_check(context):\n    return False\n"
CRASHER = (b"def init(context):\n    global model\n    model = context.model\n"
           b"def run(inputs):\n    if float(inputs['x'][0][0]) < 0:\n"
           b"        raise RuntimeError('negative input crashes this module')\n    return model.run(inputs)\n")


def build(fleet, name: str = "scaler", *, main: bytes | None = None, health: dict | None = None,
          scale: float = 2.0) -> dict:
    files = module_files(name, model=tiny_onnx(scale))
    if main is not None:
        files["main.py"] = main
    if health is not None:
        spec = json.loads(files["module.json"])
        spec["config"] = {**spec["config"], "health": health}
        files["module.json"] = json.dumps(spec).encode()
    response = fleet.api.post("/api/bundles/from-module", files={"file": ("m.tar.gz", tar_gz(files))})
    assert response.status_code == 201, response.text
    return response.json()


def deploy(fleet, device_id: str, module: str = "scaler", version: int | None = None) -> None:
    fleet.post("/api/deployments", {"module": module, "version": version, "devices": [device_id]}, expect=201)


def reported_module(fleet, device_id: str, name: str) -> dict | None:
    modules = fleet.api.get(f"/api/devices/{device_id}").json()["modules"]
    return next((m for m in modules if m["name"] == name), None)


def events(fleet, device_id: str) -> list[dict]:
    return [r["data"] for r in fleet.api.get(f"/api/devices/{device_id}/telemetry",
                                              params={"kind": "event", "limit": 500}).json()]


def test_health_policy_refuses_unknown_fields_and_out_of_range_values():
    assert HealthPolicy.from_config({}) == HealthPolicy()
    assert HealthPolicy.from_config({"health": {"latency_budget_ms": 5, "window_ms": 2000}}).latency_budget_ms == 5
    for bad in ({"latency": 5}, {"window_ms": -1}, {"crash_limit": 0}, {"window_ms": 1.5}, {"window_ms": True}):
        with pytest.raises(HealthCheckError, match="config.health"):
            HealthPolicy.from_config({"health": bad})


def test_gate_retries_within_the_window_and_gives_up_after_it():
    clock = [0.0]
    results = iter([False, False, True])

    def check():
        if not next(results):
            raise HealthCheckError("not yet")

    policy = HealthPolicy(window_ms=1000, interval_ms=250)
    assert gate(check, policy, sleep=lambda s: clock.__setitem__(0, clock[0] + s), clock=lambda: clock[0]) == 3
    with pytest.raises(HealthCheckError):
        gate(lambda: (_ for _ in ()).throw(HealthCheckError("never")), policy,
             sleep=lambda s: clock.__setitem__(0, clock[0] + s), clock=lambda: clock[0])
    assert [restart_delay_s(HealthPolicy(backoff_ms=1000, max_restarts=2), n) for n in (1, 2, 3)] == [1, 2, None]
    tripped = []
    watch = CrashWatch(2, lambda: tripped.append(1))
    for _ in range(5):
        watch.crashed()
    assert tripped == [1], "the crash loop is signalled once"


def test_a_version_whose_health_check_passes_within_its_window_is_served(fleet):
    (agent,) = fleet.start_agents(1)
    build(fleet)
    deploy(fleet, agent.device_id)
    fleet.wait_models({"scaler": 1})
    build(fleet, main=FLAKY_CHECK, health={"window_ms": 5000, "interval_ms": 50}, scale=3.0)
    deploy(fleet, agent.device_id)
    fleet.wait_models({"scaler": 2})
    done = wait_for(lambda: [e for e in events(fleet, agent.device_id) if e["event"] == "install_succeeded"
                             and e["version"] == 2], what="the install event")
    assert done[0]["health_attempts"] == 3


@pytest.mark.parametrize("main, health, code", [
    (SLOW_RUN, {"latency_budget_ms": 5, "window_ms": 200, "interval_ms": 50}, "latency_budget_exceeded"),
    (FAILING_CHECK, {"window_ms": 200, "interval_ms": 50}, "health_check_failed"),
])
def test_an_unhealthy_new_version_is_rolled_back_by_the_device_and_reported(fleet, main, health, code):
    (agent,) = fleet.start_agents(1)
    build(fleet)
    deploy(fleet, agent.device_id)
    fleet.wait_models({"scaler": 1})
    build(fleet, main=main, health=health, scale=3.0)
    deploy(fleet, agent.device_id)

    report = wait_for(lambda: (m := reported_module(fleet, agent.device_id, "scaler")) and m["error"] and m,
                      what="the failure in the reported state")
    assert (report["error"]["code"], report["error"]["category"]) == (code, "health")
    assert (report["state"], report["version"], report["target_version"]) == ("failed", 1, 2)
    assert agent.models == {"scaler": 1}
    np.testing.assert_allclose(agent.infer("scaler", {"x": X}).outputs["y"], X * 2.0)
    failed = wait_for(lambda: [e for e in events(fleet, agent.device_id) if e["event"] == "install_failed"],
                      what="the install_failed event")
    assert (failed[0]["code"], failed[0]["category"], failed[0]["rolled_back_to"]) == (code, "health", 1)


def test_a_crash_looping_module_is_backed_off_then_marked_broken_while_the_others_keep_serving(fleet):
    (agent,) = fleet.start_agents(1)
    build(fleet)
    build(fleet, "crasher", main=CRASHER, health={"crash_limit": 3, "backoff_ms": 300, "max_restarts": 1})
    deploy(fleet, agent.device_id, "scaler")
    deploy(fleet, agent.device_id, "crasher")
    fleet.wait_models({"scaler": 1, "crasher": 1})
    bad = {"x": -X}

    def crash_loop() -> None:
        for _ in range(3):
            with pytest.raises(ModuleError):
                agent.infer("crasher", bad)

    crash_loop()
    assert agent.models == {"scaler": 1}, "the crash-looping module is out of service"
    with pytest.raises(ModelNotFound):
        agent.infer("crasher", {"x": X})
    np.testing.assert_allclose(agent.infer("scaler", {"x": X}).outputs["y"], X * 2.0)
    report = wait_for(lambda: (m := reported_module(fleet, agent.device_id, "crasher")) and m["state"] == "failed"
                      and m, what="crash_loop in the reported state")
    assert (report["error"]["code"], report["error"]["category"]) == ("crash_loop", "health")

    fleet.wait_models({"scaler": 1, "crasher": 1}, timeout=10)  # restarted after its back-off
    agent.infer("crasher", {"x": X})
    crash_loop()
    assert agent.models == {"scaler": 1}
    wait_for(lambda: any(e["event"] == "module_broken" for e in events(fleet, agent.device_id)),
             what="the module_broken event")
    report = reported_module(fleet, agent.device_id, "crasher")
    assert (report["state"], report["error"]["code"]) == ("failed", "crash_loop")
    assert "crasher" not in agent.models, "after its last restart it stays down"
