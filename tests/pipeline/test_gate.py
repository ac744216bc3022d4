"""Item 4: deployments and rollouts refused at creation when the model does not fit a target device."""

from __future__ import annotations

from fleet_protocol import topics
from fleet_server.pipeline import gate
from fleet_server.store import devices as device_store
from firmware_profiles import load_profile
from fleet_protocol.profiles import parse_profile

from tests.server import messages

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
    api.post("/api/models/iris-mlp/from-sklearn", files={"file": ("m.pkl", mlp_pickle)},
             data={"allow_duplicate": "true"})  # v2: never profiled
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


def fit(profile, limits: dict | None, model: dict | None = MODEL) -> list[str]:
    """The problems fit_table finds for one bundle of ``model`` on ``profile``."""
    return gate.fit_table(bundles=[("m v1", model)], gate=limits, names=[profile.name],
                          load_profile=lambda name: profile)["profiles"][profile.name]


def test_model_too_big_or_runtime_not_runnable_is_refused_even_without_a_gate():
    assert fit(parse_profile(PROFILE, source="test"), None) == [
        "model m:3 is 5000 bytes, more than the profile's max_model_bytes 1000",
        "the profile lists no ONNX Runtime providers, and m:3 is an ONNX model"]


def test_latency_is_scaled_by_relative_speed_and_memory_is_not():
    tiny = parse_profile({**PROFILE, "max_model_bytes": 10_000, "onnx_providers": [{"name": "CPUExecutionProvider"}]},
                         source="test")
    assert fit(tiny, {"p95_ms": 8.0, "memory_mb": 2.0}) == []
    assert fit(tiny, {"p95_ms": 7.9}) == ["expected p95 8.000 ms > gate 7.9 ms (4.000 ms measured on "
                                          "CPUExecutionProvider, relative_speed_percent 50)"]
    assert fit(tiny, {"memory_mb": 1.5}) == ["peak memory 2.0 MB > gate 1.5 MB"]


def test_gate_on_a_bundle_without_a_registered_model_is_refused():
    assert "not built from a registered model" in gate.model_problems([("x v1", None)], {"p95_ms": 1})[0]
    assert gate.model_problems([("x v1", None)], None) == []


def join(fleet, device_id: str, profile: str) -> None:
    """The device's agent connects for the first time: the status message goes through the real handler."""
    fleet.handlers.handle(topics.device_topic(device_id, "status"),
                          messages.status(device_id, tags={"site": "lab"}, profile=profile))


def modules_of(fleet, device_id: str) -> list[str]:
    envelope = device_store.get_device(db=fleet.db, device_id=device_id)["desired_envelope"]
    return [f"{m['name']} v{m['version']}" for m in (envelope or {"signed": {"modules": []}})["signed"]["modules"]]


def test_a_device_joining_a_gated_selector_later_is_not_assigned_and_shows_why(api, fleet, mlp_pickle, iris):
    measured = profiled_mlp(api, mlp_pickle, iris)
    add_device(fleet, "fast", "generic-cpu")
    deployment = api.post("/api/deployments", json={"module": "iris-mlp", "selector": {"site": "lab"},
                                                    "gate": {"p95_ms": measured["p95_us"] / 1000 * 2}}).json()
    join(fleet, "slow", "coral-dev-board")
    assert modules_of(fleet, "slow") == [] and modules_of(fleet, "fast") == ["iris-mlp v1"]
    rows = {r["device_id"]: r for r in api.get(f"/api/deployments/{deployment['id']}").json()["devices"]}
    assert (rows["fast"]["state"], rows["slow"]["state"]) == ("pending", "refused")
    assert (rows["slow"]["error"]["code"], rows["slow"]["error"]["category"]) == ("gate_refused", "fit")
    assert "expected p95" in rows["slow"]["error"]["message"]
    explained = api.get("/api/devices/slow/explain").json()["modules"][0]
    assert explained["deployment_id"] is None and "refused by its fit check" in explained["overridden"][0]["reason"]


def test_a_device_reconnecting_with_a_slower_profile_loses_a_gated_deployment(api, fleet, mlp_pickle, iris):
    measured = profiled_mlp(api, mlp_pickle, iris)
    join(fleet, "board", "generic-cpu")
    api.post("/api/deployments", json={"module": "iris-mlp", "selector": {"site": "lab"},
                                       "gate": {"p95_ms": measured["p95_us"] / 1000 * 2}})
    assert modules_of(fleet, "board") == ["iris-mlp v1"]
    join(fleet, "board", "coral-dev-board")
    assert modules_of(fleet, "board") == []


def test_promoting_an_ab_variant_keeps_the_gate_so_refused_devices_stay_refused(api, fleet, mlp_pickle, iris):
    measured = profiled_mlp(api, mlp_pickle, iris)
    api.post("/api/models/iris-mlp/from-sklearn", files={"file": ("m.pkl", mlp_pickle)},
             data={"allow_duplicate": "true"})
    # v2 is the same network, so it carries v1's measurement: two measurements taken under load can differ
    # many times over (one preempted run moves a p95 of 20 runs), and then no limit both admits every version
    # on the fast device and refuses v2 on the slow one.
    profile = api.get("/api/models/iris-mlp/versions/1").json()["properties"]["profile"]
    v2 = api.get("/api/models/iris-mlp/versions/2").json()
    assert api.patch("/api/models/iris-mlp/versions/2",
                     json={"properties": {**v2["properties"], "profile": profile}}).status_code == 200
    assert api.post("/api/bundles/from-model", json={"model": "iris-mlp", "version": 2}).status_code == 201
    add_device(fleet, "fast", "generic-cpu")
    limit = measured["p95_us"] / 1000 * 2  # generic-cpu (100 %) passes, coral (15 %) takes 6.7x as long
    split = api.post("/api/deployments", json={"module": "iris-mlp", "version": 1, "selector": {"site": "lab"},
                                               "split": {"1": 50, "2": 50}, "gate": {"p95_ms": limit}})
    assert split.status_code == 201, split.text
    join(fleet, "slow", "coral-dev-board")
    promoted = api.post(f"/api/deployments/{split.json()['id']}/promote", json={"version": 2})
    assert promoted.status_code == 201, promoted.text
    assert promoted.json()["fit"]["gate"] == {"p95_ms": limit}
    rows = {r["device_id"]: r["state"] for r in api.get(f"/api/deployments/{promoted.json()['id']}").json()["devices"]}
    assert rows == {"fast": "pending", "slow": "refused"}
    assert modules_of(fleet, "slow") == [] and modules_of(fleet, "fast") == ["iris-mlp v2"]


def test_retagging_a_device_into_a_gated_selector_checks_the_gate_and_says_why_it_was_refused(api, fleet, mlp_pickle,
                                                                                               iris):
    profiled_mlp(api, mlp_pickle, iris)
    api.post("/api/devices", json={"id": "unseen", "tags": {"site": "elsewhere"}})  # its agent never said its profile
    created = api.post("/api/deployments", json={"module": "iris-mlp", "selector": {"site": "lab"},
                                                 "gate": {"p95_ms": 1000}, "allow_empty": True})
    assert created.status_code == 201, created.text
    report = api.post("/api/devices/unseen/tags", json={"set": {"site": "lab"}}).json()
    lost = report["modules"][0]["overridden"][0]["reason"]
    assert "refused by its fit check: firmware profile (none reported) is not known" in lost
    assert modules_of(fleet, "unseen") == []
