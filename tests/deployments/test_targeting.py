"""Targeting: groups, selectors that follow tags, priorities between overlapping deployments, and explain."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from fleet_server.api.app import create_app
from fleet_server.config import ServerConfig
from fleet_server.fleet import Fleet
from fleet_server.store import rollouts as rollout_store
from tests.server.builders import module_files, tar_gz, tiny_onnx
from tests.support.postgres import BOTH_ENGINES

pytestmark = BOTH_ENGINES  # the store-touching tests run on SQLite and PostgreSQL

TOKEN = "targeting-admin-token"


@pytest.fixture
def api(tmp_path, monkeypatch, store_url):
    """The API over a real server core whose publishing goes nowhere (no broker needed for targeting)."""
    monkeypatch.setenv("EDGEFLEET_ADMIN_TOKEN", TOKEN)
    config = ServerConfig(data_dir=tmp_path / "server", database_url=store_url, port=0, embedded_broker_port=0)
    core = Fleet(config)
    client = TestClient(create_app(config, fleet=core), headers={"Authorization": f"Bearer {TOKEN}"})
    client.core = core
    yield client
    client.close()
    core.close()


def ok(response, status: int = 200) -> dict:
    assert response.status_code == status, response.text
    return response.json()


def build(api, name: str, scale: float) -> dict:
    archive = tar_gz(module_files(name, model=tiny_onnx(scale)))
    return ok(api.post("/api/bundles/from-module", files={"file": ("m.tar.gz", archive)}), 201)


def explained(api, device_id: str) -> dict[str, dict]:
    return {m["module"]: m for m in ok(api.get(f"/api/devices/{device_id}/explain"))["modules"]}


def test_group_membership_by_selector_follows_tag_changes(api):
    ok(api.post("/api/devices", json={"id": "cam-1", "tags": {"site": "lab"}}), 201)
    ok(api.post("/api/devices", json={"id": "cam-2", "tags": {"site": "field"}}), 201)
    build(api, "scaler", 2.0)
    group = ok(api.post("/api/groups", json={"name": "lab", "selector": {"site": "lab"}}), 201)
    assert group["members"] == ["cam-1"]
    ok(api.post("/api/deployments", json={"module": "scaler", "group": "lab"}), 201)
    assert explained(api, "cam-1")["scaler"]["version"] == 1 and explained(api, "cam-2") == {}

    before = ok(api.get("/api/devices/cam-2"))["desired_generation"]
    ok(api.patch("/api/devices/cam-2", json={"tags": {"site": "lab"}}))
    assert ok(api.get("/api/devices/cam-2"))["desired_generation"] == before + 1
    assert explained(api, "cam-2")["scaler"]["version"] == 1
    assert ok(api.get("/api/groups/lab"))["members"] == ["cam-1", "cam-2"]
    ok(api.patch("/api/devices/cam-1", json={"tags": {"site": "field"}}))
    assert "scaler" not in explained(api, "cam-1")

    assert api.post("/api/groups", json={"name": "lab", "devices": ["cam-1"]}).status_code == 409
    assert api.post("/api/deployments", json={"module": "scaler", "group": "nope"}).status_code == 404


def test_higher_priority_wins_per_module_then_the_newest_and_explain_says_why(api):
    ok(api.post("/api/devices", json={"id": "cam-1", "tags": {"site": "lab", "tier": "gold"}}), 201)
    for scale in (2.0, 3.0, 4.0):
        build(api, "scaler", scale)
    build(api, "counter", 1.0)
    pinned = ok(api.post("/api/deployments", json={"module": "scaler", "version": 1, "devices": ["cam-1"],
                                                   "priority": 10}), 201)
    ok(api.post("/api/deployments", json={"module": "scaler", "version": 3, "selector": {"site": "lab"}}), 201)
    newest_low = ok(api.post("/api/deployments", json={"module": "scaler", "version": 2,
                                                       "selector": {"tier": "gold"}}), 201)
    other = ok(api.post("/api/deployments", json={"module": "counter", "selector": {"site": "lab"}}), 201)

    rows = explained(api, "cam-1")
    assert (rows["scaler"]["deployment_id"], rows["scaler"]["version"]) == (pinned["id"], 1)
    assert "highest priority (10)" in rows["scaler"]["reason"]
    assert {o["reason"] for o in rows["scaler"]["overridden"]} == {"lower priority"}
    assert rows["counter"]["deployment_id"] == other["id"], "modules are merged independently"

    tie = ok(api.post("/api/deployments", json={"module": "scaler", "version": 3, "devices": ["cam-1"],
                                                "priority": 10}), 201)
    rows = explained(api, "cam-1")
    assert (rows["scaler"]["deployment_id"], rows["scaler"]["version"]) == (tie["id"], 3)
    reasons = {o["deployment_id"]: o["reason"] for o in rows["scaler"]["overridden"]}
    assert reasons[pinned["id"]] == "older, same priority" and reasons[newest_low["id"]] == "lower priority"


def test_rollout_history_is_append_only(api):
    ok(api.post("/api/devices", json={"id": "cam-1", "tags": {"site": "lab"}}), 201)
    build(api, "scaler", 2.0)
    rollout = ok(api.post("/api/rollouts", json={"module": "scaler", "selector": {"site": "lab"}}), 201)
    assert ok(api.post(f"/api/rollouts/{rollout['id']}/pause"))["state"] == "paused"
    history = ok(api.get(f"/api/rollouts/{rollout['id']}/history"))
    assert [e["kind"] for e in history] == ["created", "wave_started", "devices_admitted", "paused"]
    db = api.core.db
    for statement in ("UPDATE rollout_events SET kind = 'x'", "DELETE FROM rollout_events"):
        with pytest.raises(Exception, match="append-only"):
            with db.transaction() as tx:
                tx.execute(text(statement))
    assert len(rollout_store.events(db=db, rollout_id=rollout["id"])) == 4
