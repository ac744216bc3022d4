"""Devices, deployments and desired state through the API, with device messages fed to the handlers."""

from __future__ import annotations

import pytest

from fleet_protocol import topics
from fleet_protocol.errors import RollbackError
from fleet_protocol.messages import ModuleReport
from fleet_protocol.signing import PublicKey
from fleet_server.clock import utc_now
from fleet_protocol.trust import TrustedState
from fleet_server.store import deployments as deployment_store
from fleet_server.store import devices as device_store

from . import messages as msg
from .builders import module_files, tar_gz, tiny_onnx
from tests.support.postgres import BOTH_ENGINES

pytestmark = BOTH_ENGINES  # the store-touching tests run on SQLite and PostgreSQL


def build(api, name: str = "scaler", scale: float = 2.0) -> dict:
    archive = tar_gz(module_files(name, model=tiny_onnx(scale)))
    response = api.post("/api/bundles/from-module", files={"file": ("m.tar.gz", archive)})
    assert response.status_code == 201, response.text
    return response.json()


def deploy(api, **body) -> dict:
    response = api.post("/api/deployments", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def desired(fleet, device_id: str) -> tuple[int, dict | None]:
    device = device_store.get_device(db=fleet.db, device_id=device_id)
    return device["desired_generation"], device["desired_envelope"]


def feed(fleet, device_id: str, kind: str, payload: bytes) -> None:
    fleet.handlers.handle(topics.device_topic(device_id, kind), payload)


def test_devices_can_be_registered_listed_and_retagged(api):
    assert api.post("/api/devices", json={"id": "cam-1", "name": "Door", "tags": {"site": "lab"}}).status_code == 201
    assert api.post("/api/devices", json={"id": "cam-1"}).status_code == 409
    assert api.post("/api/devices", json={"id": "Cam 2"}).status_code == 400
    device = api.get("/api/devices/cam-1").json()
    assert (device["status"], device["tags"], device["desired_generation"]) == ("unknown", {"site": "lab"}, 0)
    assert [d["id"] for d in api.get("/api/devices", params={"tag": "site=lab"}).json()] == ["cam-1"]
    assert api.get("/api/devices", params={"tag": "site=field"}).json() == []
    assert api.patch("/api/devices/cam-1", json={"tags": {"site": "field"}}).json()["tags"] == {"site": "field"}
    assert api.patch("/api/devices/nope", json={"name": "x"}).status_code == 404
    assert api.get("/api/devices", params={"status": "bogus"}).status_code == 422


def test_a_status_message_registers_the_device_with_its_own_tags(api, fleet):
    feed(fleet, "cam-9", "status", msg.status("cam-9", tags={"site": "lab"}, profile="raspberry-pi-5",
                                              agent_version="0.1.0", scoring_url="http://cam-9:8000"))
    device = api.get("/api/devices/cam-9").json()
    assert (device["status"], device["profile"], device["tags"]) == ("online", "raspberry-pi-5", {"site": "lab"})
    assert device["scoring_url"] == "http://cam-9:8000" and device["last_seen"]
    feed(fleet, "cam-9", "status", msg.status("cam-9", state="offline"))
    assert api.get("/api/devices", params={"status": "offline"}).json()[0]["id"] == "cam-9"


def test_deployment_signs_a_desired_state_that_a_device_trusts(api, fleet):
    bundle = build(api)
    api.post("/api/devices", json={"id": "cam-1"})
    deployment = deploy(api, module="scaler", devices=["cam-1"])
    assert (deployment["version"], deployment["bundle_digest"]) == (1, bundle["digest"])
    generation, envelope = desired(fleet, "cam-1")
    keys = [PublicKey.from_hex(k["public_key"]) for k in api.get("/api/keys").json()["signing_keys"]]
    trust = TrustedState("cam-1", keys)
    state = trust.verify_desired_state(envelope, now=utc_now())
    assert (generation, state.generation) == (1, 1)
    [module] = state.modules
    manifest = trust.verify_module(module, installed=None, now=utc_now())
    assert (manifest.module, manifest.version, manifest.digest) == ("scaler", 1, bundle["digest"])


def test_desired_state_holds_the_newest_deployment_of_each_module(api, fleet):
    build(api, "scaler")
    build(api, "other")
    api.post("/api/devices", json={"id": "cam-1", "tags": {"site": "lab"}})
    deploy(api, module="scaler", devices=["cam-1"])
    deploy(api, module="other", selector={"site": "lab"})
    v2 = build(api, "scaler", scale=3.0)
    deploy(api, module="scaler", selector={"site": "lab"})
    generation, envelope = desired(fleet, "cam-1")
    modules = {m["name"]: m["bundle_digest"] for m in envelope["signed"]["modules"]}
    assert generation == 3 and modules["scaler"] == v2["digest"] and set(modules) == {"scaler", "other"}
    deploy(api, module="scaler", version=2, devices=["cam-1"])  # same bundle again: nothing changes
    assert desired(fleet, "cam-1")[0] == 3


def test_generations_only_go_up_so_an_older_document_is_refused(api, fleet):
    build(api)
    api.post("/api/devices", json={"id": "cam-1"})
    deploy(api, module="scaler", devices=["cam-1"])
    _, old = desired(fleet, "cam-1")
    build(api, scale=3.0)
    deploy(api, module="scaler", devices=["cam-1"])
    _, new = desired(fleet, "cam-1")
    trust = TrustedState("cam-1", [fleet.signing_key.public_key])
    trust.accept_generation(trust.verify_desired_state(new, now=utc_now()).generation)
    with pytest.raises(RollbackError):
        trust.verify_desired_state(old, now=utc_now())


def test_retagging_a_device_reevaluates_selector_deployments(api, fleet):
    build(api)
    api.post("/api/devices", json={"id": "cam-1", "tags": {"site": "lab"}})
    deploy(api, module="scaler", selector={"site": "field"}, allow_empty=True)
    assert desired(fleet, "cam-1") == (0, None)
    api.patch("/api/devices/cam-1", json={"tags": {"site": "field"}})
    generation, envelope = desired(fleet, "cam-1")
    assert generation == 1 and [m["name"] for m in envelope["signed"]["modules"]] == ["scaler"]
    api.patch("/api/devices/cam-1", json={"tags": {}})
    generation, envelope = desired(fleet, "cam-1")
    assert generation == 2 and envelope["signed"]["modules"] == []


def test_a_device_that_appears_later_gets_matching_selector_deployments(api, fleet):
    build(api)
    deploy(api, module="scaler", selector={"site": "lab"}, allow_empty=True)
    feed(fleet, "late-1", "status", msg.status("late-1", tags={"site": "lab"}))
    assert desired(fleet, "late-1")[0] == 1


@pytest.mark.parametrize("body, status, words", [
    ({"module": "scaler"}, 400, "needs a target"),
    ({"module": "scaler", "devices": ["ghost"]}, 400, "unknown device"),
    ({"module": "nope", "devices": ["cam-1"]}, 404, "no bundle"),
    ({"module": "scaler", "version": 7, "devices": ["cam-1"]}, 404, "version 7"),
    ({"module": "scaler", "bundle_digest": "abc", "devices": ["cam-1"]}, 400, "SHA-256"),
    ({"module": "scaler", "bundle_digest": "0" * 64, "devices": ["cam-1"]}, 404, "no bundle"),
    ({"module": "scaler", "devices": "cam-1"}, 422, "devices"),
])
def test_bad_deployment_requests_are_refused_with_a_reason(api, body, status, words):
    build(api)
    api.post("/api/devices", json={"id": "cam-1"})
    response = api.post("/api/deployments", json=body)
    assert response.status_code == status
    assert words in response.json()["detail"]


def test_deployment_with_a_bundle_of_another_module_is_refused(api):
    other = build(api, "other")
    build(api, "scaler")
    api.post("/api/devices", json={"id": "cam-1"})
    response = api.post("/api/deployments", json={"module": "scaler", "bundle_digest": other["digest"],
                                                  "devices": ["cam-1"]})
    assert response.status_code == 400 and "is module 'other'" in response.json()["detail"]


def test_deployment_status_follows_what_devices_report(api, fleet):
    bundle = build(api)
    for device_id in ("cam-1", "cam-2", "cam-3"):
        api.post("/api/devices", json={"id": device_id, "tags": {"site": "lab"}})
    deployment = deploy(api, module="scaler", selector={"site": "lab"})
    digest = bundle["digest"]
    feed(fleet, "cam-1", "reported", msg.reported("cam-1", [ModuleReport("scaler", "running", 1, digest)]))
    feed(fleet, "cam-2", "reported", msg.reported("cam-2", [ModuleReport(
        "scaler", "failed", target_version=1, target_digest=digest,
        error={"code": "load_failed", "category": "load", "message": "no such op"})]))
    detail = api.get(f"/api/deployments/{deployment['id']}").json()
    states = {d["device_id"]: d["state"] for d in detail["devices"]}
    assert states == {"cam-1": "running", "cam-2": "failed", "cam-3": "pending"}
    assert detail["counts"] == {"pending": 1, "installing": 0, "running": 1, "failed": 1, "superseded": 0,
                                "refused": 0}
    assert next(d for d in detail["devices"] if d["device_id"] == "cam-2")["error"]["code"] == "load_failed"
    build(api, scale=3.0)
    deploy(api, module="scaler", devices=["cam-3"])
    states = {d["device_id"]: d["state"] for d in api.get(f"/api/deployments/{deployment['id']}").json()["devices"]}
    assert states["cam-3"] == "superseded"
    assert [d["id"] for d in api.get("/api/deployments").json()] == [deployment["id"], deployment["id"] + 1]
    assert api.get("/api/deployments/999").status_code == 404


def test_reported_state_shows_on_the_device(api, fleet):
    feed(fleet, "cam-1", "reported", msg.reported("cam-1", [ModuleReport("scaler", "installing", target_version=1,
                                                                         target_digest="a" * 64)]))
    device = api.get("/api/devices/cam-1").json()
    assert device["modules"][0]["state"] == "installing"
    assert device["reported"]["agent_version"] == "0.1.0" and device["agent_version"] == "0.1.0"


def test_telemetry_is_queryable_per_device_and_kind(api, fleet):
    feed(fleet, "cam-1", "status", msg.status("cam-1"))
    feed(fleet, "cam-1", "telemetry", msg.telemetry("cam-1", [1, 2, 3]))
    feed(fleet, "cam-1", "telemetry", msg.telemetry("cam-1", [4], kind="health"))
    assert len(api.get("/api/devices/cam-1/telemetry").json()) == 4
    health = api.get("/api/devices/cam-1/telemetry", params={"kind": "health"}).json()
    assert [(r["seq"], r["data"]) for r in health] == [(4, {"latency_ms": 4})]
    assert len(api.get("/api/telemetry", params={"device_id": "cam-1", "limit": 2}).json()) == 2
    assert api.get("/api/telemetry", params={"limit": 0}).status_code == 422
    assert api.get("/api/devices/ghost/telemetry").status_code == 404


def test_deployment_to_a_selector_matching_no_device_is_refused_unless_allow_empty(api, fleet):
    build(api)
    api.post("/api/devices", json={"id": "cam-1", "tags": {"site": "lab"}})
    for path in ("/api/deployments", "/api/rollouts"):
        response = api.post(path, json={"module": "scaler", "selector": {"site": "nowhere"}})
        assert response.status_code == 400, response.text
        assert "no device matches selector site=nowhere" in response.json()["detail"]
        assert "--allow-empty" in response.json()["detail"]
    api.post("/api/groups", json={"name": "empty", "selector": {"site": "nowhere"}})
    response = api.post("/api/deployments", json={"module": "scaler", "group": "empty"})
    assert response.status_code == 400 and "no device matches group empty" in response.json()["detail"]
    assert api.get("/api/deployments").json() == [] and api.get("/api/rollouts").json() == []
    deploy(api, module="scaler", selector={"site": "nowhere"}, allow_empty=True)


def test_an_allowed_empty_rollout_waits_for_a_device_instead_of_completing(api, fleet):
    build(api)
    response = api.post("/api/rollouts", json={"module": "scaler", "selector": {"site": "later"},
                                               "allow_empty": True})
    assert response.status_code == 201, response.text
    rollout_id = response.json()["id"]
    fleet.rollouts.step_all()
    waiting = api.get(f"/api/rollouts/{rollout_id}").json()
    assert (waiting["state"], waiting["wave"], waiting["waves"]) == ("running", -1, [])
    assert waiting["reason"] == "waiting for a device: none that it may run on matches selector site=later yet"
    api.post("/api/devices", json={"id": "cam-7", "tags": {"site": "later"}})
    fleet.rollouts.step_all()
    admitted = api.get(f"/api/rollouts/{rollout_id}").json()
    assert (admitted["state"], admitted["waves"], admitted["reason"]) == ("running", [["cam-7"]], None)
    assert [m["name"] for m in desired(fleet, "cam-7")[1]["signed"]["modules"]] == ["scaler"]


def test_a_device_that_registers_while_a_deployment_is_being_created_gets_it(api, fleet, monkeypatch):
    """The device's own recompute ran before the deployment existed, so the creation must cover it."""
    build(api)
    api.post("/api/devices", json={"id": "cam-1", "tags": {"site": "lab"}})
    insert = deployment_store.insert_deployment

    def insert_after_a_device_registered(**kwargs):
        feed(fleet, "cam-2", "status", msg.status("cam-2", tags={"site": "lab"}))  # between the listing and the insert
        return insert(**kwargs)

    monkeypatch.setattr(deployment_store, "insert_deployment", insert_after_a_device_registered)
    deploy(api, module="scaler", selector={"site": "lab"})
    for device_id in ("cam-1", "cam-2"):
        assert [m["name"] for m in desired(fleet, device_id)[1]["signed"]["modules"]] == ["scaler"], device_id
