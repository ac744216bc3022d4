"""Item 4: deployments and rollouts refused at creation when the model does not fit a target device."""

from __future__ import annotations

from fleet_server.pipeline import gate
from fleet_server.store import devices as device_store
from fleet_protocol.profiles import load_profile, parse_profile

from .conftest import npy

NOW = "2026-01-01T00:00:00Z"


def add_device(fleet, device_id: str, profile: str) -> None:
    device_store.record_status(db=fleet.db, device_id=device_id, status="online", seen=NOW, profile=profile,
                               agent_version="test", scoring_url=None, device_tags={"site": "lab"}, created=NOW)


def profiled_mlp(api, mlp_pickle, iris) -> dict:
    api.post("/api/models/iris-mlp/from-sklearn", files={"file": ("m.pkl", mlp_pickle)})
    api.post("/api/models/iris-mlp/versions/1/profile", data={"runs": "20"},
             files={"sample": ("s.npy", npy(iris[0][:1]))})
    assert api.post("/api/bundles/from-model", json={"model": "iris-mlp"}).status_code == 201
    return api.get("/api/models/iris-mlp/versions/1").json()["properties"]["profile"]["providers"][
        "CPUExecutionProvider"]


def test_gate_refuses_slow_devices_listing_each_device_and_its_numbers(api, fleet, mlp_pickle, iris):
    measured = profiled_mlp(api, mlp_pickle, iris)
    add_device(fleet, "fast", "generic-cpu")
    add_device(fleet, "slow", "coral-dev-board")
    slow_ms = measured["p95_us"] / 1000 * 100 / load_profile("coral-dev-board").relative_speed_percent
    limit = measured["p95_us"] / 1000 * 2  # generic-cpu (100 %) passes, coral (15 %) takes 6.7x as long
    response = api.post("/api/deployments", json={"module": "iris-mlp", "selector": {"site": "lab"},
                                                  "gate": {"p95_ms": limit}})
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert "device slow (coral-dev-board): expected p95" in detail and f"{slow_ms:.3f} ms" in detail
    assert "device fast" not in detail
    assert api.get("/api/deployments").json() == []

    ok = api.post("/api/deployments", json={"module": "iris-mlp", "devices": ["fast"], "gate": {"p95_ms": limit}})
    assert ok.status_code == 201, ok.text


def test_rollout_memory_gate_and_unprofiled_version_are_refused(api, fleet, mlp_pickle, iris):
    measured = profiled_mlp(api, mlp_pickle, iris)
    add_device(fleet, "pi", "raspberry-pi-5")
    assert measured["peak_memory_kib"] > 0  # onnxruntime's session alone takes megabytes
    too_small = measured["peak_memory_kib"] / 1024 / 2
    response = api.post("/api/rollouts", json={"module": "iris-mlp", "devices": ["pi"],
                                               "gate": {"memory_mb": too_small}})
    assert response.status_code == 400 and "peak memory" in response.json()["detail"]
    api.post("/api/models/iris-mlp/from-sklearn", files={"file": ("m.pkl", mlp_pickle)})  # v2: never profiled
    assert api.post("/api/bundles/from-model", json={"model": "iris-mlp", "version": 2}).status_code == 201
    response = api.post("/api/rollouts", json={"module": "iris-mlp", "devices": ["pi"], "gate": {"p95_ms": 1000}})
    assert response.status_code == 400 and "iris-mlp:2 has no stored CPUExecutionProvider profile" in \
        response.json()["detail"]
    assert api.get("/api/rollouts").json() == []


def test_gated_deployment_refuses_devices_with_unknown_profiles(api, fleet, mlp_pickle, iris):
    profiled_mlp(api, mlp_pickle, iris)
    add_device(fleet, "mystery", "/etc/some-board.toml")
    response = api.post("/api/deployments", json={"module": "iris-mlp", "devices": ["mystery"],
                                                  "gate": {"p95_ms": 1000}})
    assert response.status_code == 400 and "is not known" in response.json()["detail"]
    assert api.post("/api/deployments", json={"module": "iris-mlp", "devices": ["mystery"]}).status_code == 201


PROFILE = {"name": "tiny", "arch": "arm64", "memory_mb": 64, "accelerators": ["cpu", "tpu"], "max_model_bytes": 1000,
           "memory_budget_mb": 32, "tflite_delegates": [{"name": "xnnpack"}], "relative_speed_percent": 50}
MODEL = {"name": "m", "version": 3, "runtime": "onnx", "size": 5000,
         "properties": {"profile": {"providers": {"CPUExecutionProvider": {"p95_us": 4000,
                                                                           "peak_memory_kib": 2048}}}}}


def test_model_too_big_or_runtime_not_runnable_is_refused_even_without_a_gate():
    tiny = parse_profile(PROFILE, source="test")
    problems = gate.check(model=MODEL, bundle_label="m v1", devices=[{"id": "d1", "profile": "tiny"}], gate=None,
                          load_profile=lambda name: tiny)
    assert problems == ["device d1 (tiny): model m:3 is 5000 bytes, more than the profile's max_model_bytes 1000",
                        "device d1 (tiny): the profile lists no ONNX Runtime providers, and m:3 is an ONNX model"]


def test_latency_is_scaled_by_relative_speed_and_memory_is_not():
    tiny = parse_profile({**PROFILE, "max_model_bytes": 10_000, "onnx_providers": [{"name": "CPUExecutionProvider"}]},
                         source="test")

    def check(limits: dict) -> list[str]:
        return gate.check(model=MODEL, bundle_label="m v1", devices=[{"id": "d1", "profile": "tiny"}], gate=limits,
                          load_profile=lambda name: tiny)

    assert check({"p95_ms": 8.0, "memory_mb": 2.0}) == []
    assert check({"p95_ms": 7.9}) == ["device d1 (tiny): expected p95 8.000 ms > gate 7.9 ms (4.000 ms measured on "
                                      "CPUExecutionProvider, relative_speed_percent 50)"]
    assert check({"memory_mb": 1.5}) == ["device d1 (tiny): peak memory 2.0 MB > gate 1.5 MB"]


def test_gate_on_a_bundle_without_a_registered_model_is_refused():
    assert "not built from a registered model" in gate.check(model=None, bundle_label="x v1", devices=[],
                                                              gate={"p95_ms": 1})[0]
    assert gate.check(model=None, bundle_label="x v1", devices=[], gate=None) == []
