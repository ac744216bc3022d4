"""API tokens, roles and the audit log, against the real server over HTTP (and the real CLI where it matters)."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

from fleet_server.store import audit as audit_store
from tests.support.fleet import ADMIN_TOKEN, start_server


@pytest.fixture
def server(server_thread):
    return server_thread


def client(server, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=30)


def make_token(server, name: str, role: str) -> str:
    with client(server, ADMIN_TOKEN) as admin:
        response = admin.post("/api/tokens", json={"name": name, "role": role})
    assert response.status_code == 201, response.text
    return response.json()["token"]


def cli(*args: str, server, token: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "EDGEFLEET_SERVER": server.url, "EDGEFLEET_TOKEN": token, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "edgefleet_cli.main", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_request_without_token_is_401(server):
    with client(server, None) as anonymous:
        assert anonymous.get("/api/devices").status_code == 401
        assert anonymous.post("/api/devices", json={"id": "d1"}).status_code == 401


def test_unknown_token_is_401(server):
    with client(server, "not-a-token") as stranger:
        assert stranger.get("/api/devices").status_code == 401


def test_viewer_token_can_read(server):
    with client(server, make_token(server, "dash", "viewer")) as viewer:
        assert viewer.get("/api/devices").status_code == 200
        assert viewer.get("/api/audit").status_code == 200


def test_viewer_token_cannot_deploy(server):
    with client(server, make_token(server, "dash", "viewer")) as viewer:
        response = viewer.post("/api/deployments", json={"module": "m", "version": 1, "devices": ["d1"]})
        assert response.status_code == 403
        assert "operator" in response.json()["detail"]
        assert viewer.post("/api/devices", json={"id": "d1"}).status_code == 403


def test_operator_token_can_change_the_fleet(server):
    with client(server, make_token(server, "ci", "operator")) as operator:
        assert operator.post("/api/devices", json={"id": "d1"}).status_code == 201


def test_operator_token_cannot_manage_tokens_or_keys(server):
    with client(server, make_token(server, "ci", "operator")) as operator:
        assert operator.post("/api/tokens", json={"name": "x", "role": "admin"}).status_code == 403
        assert operator.get("/api/tokens").status_code == 403
        assert operator.get("/api/keys").status_code == 403


def test_deleted_token_is_refused_at_once(server):
    token = make_token(server, "ci", "operator")
    with client(server, ADMIN_TOKEN) as admin:
        assert admin.delete("/api/tokens/ci").status_code == 204
    with client(server, token) as operator:
        assert operator.get("/api/devices").status_code == 401


def test_last_admin_token_cannot_be_deleted(server):
    with client(server, ADMIN_TOKEN) as admin:
        assert admin.delete("/api/tokens/admin").status_code == 409


def test_tokens_are_stored_hashed_and_never_listed(server):
    token = make_token(server, "ci", "operator")
    with client(server, ADMIN_TOKEN) as admin:
        listing = admin.get("/api/tokens")
    assert {t["name"]: t["role"] for t in listing.json()} == {"admin": "admin", "ci": "operator"}
    assert token not in listing.text and ADMIN_TOKEN not in listing.text
    database = (server.config.data_dir / "fleet.db").read_bytes()
    assert token.encode() not in database and ADMIN_TOKEN.encode() not in database


def test_token_create_prints_the_token_once_and_it_works(server):
    result = cli("token", "create", "--role", "viewer", "--name", "ci", server=server, token=ADMIN_TOKEN)
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip().splitlines()[-1]
    with client(server, token) as viewer:
        assert viewer.get("/api/devices").status_code == 200
    listing = cli("token", "list", server=server, token=ADMIN_TOKEN)
    assert "ci" in listing.stdout and token not in listing.stdout


def test_every_change_is_audited_with_the_token_name(server):
    with client(server, make_token(server, "ci", "operator")) as operator:
        operator.post("/api/devices", json={"id": "d1"})
        operator.get("/api/devices")
    entries = [e for e in audit_store.list_entries(db=server.fleet.db) if e["actor"] == "ci"]
    assert [(e["action"], e["target"], e["status"]) for e in entries] == [("POST /api/devices", "/api/devices", 201)]
    result = cli("audit", "list", "--json", "--actor", "ci", server=server, token=ADMIN_TOKEN)
    assert '"POST /api/devices"' in result.stdout


def test_refused_change_is_audited_too(server):
    with client(server, make_token(server, "dash", "viewer")) as viewer:
        viewer.post("/api/devices", json={"id": "d1"})
    entries = audit_store.list_entries(db=server.fleet.db, actor="dash")
    assert [(e["action"], e["status"]) for e in entries] == [("POST /api/devices", 403)]


def test_audit_log_is_append_only(server):
    import sqlite3

    with client(server, ADMIN_TOKEN) as admin:
        admin.post("/api/devices", json={"id": "d1"})
    conn = sqlite3.connect(server.config.data_dir / "fleet.db", timeout=60)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM audit_log")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE audit_log SET actor = 'someone-else'")
    conn.close()


def test_access_log_does_not_record_query_string_tokens(tmp_path, mosquitto):
    server = start_server(tmp_path, mosquitto.url)
    try:
        viewer = make_token(server, "dash", "viewer")
        with httpx.Client(base_url=server.url, timeout=30) as anonymous:
            with anonymous.stream("GET", "/api/events", params={"token": viewer}) as events:
                assert events.status_code == 200
                next(events.iter_lines())
            assert anonymous.get("/api/devices", params={"token": viewer}).status_code == 401
    finally:
        server.stop()
    log = server.log.read_text()
    assert "GET /api/events?" in log  # the access log is on, just without the query
    assert viewer not in log


def test_every_audited_action_names_the_object_it_acted_on(server):
    from tests.server.builders import tiny_onnx

    with client(server, ADMIN_TOKEN) as admin:
        model = admin.post("/api/models/scaler", files={"file": ("m.onnx", tiny_onnx())}).json()
        bundle = admin.post("/api/bundles/from-model", json={"model": "scaler"}).json()
        admin.post("/api/devices", json={"id": "d1", "tags": {"site": "lab"}})
        deployment = admin.post("/api/deployments", json={"module": "scaler", "selector": {"site": "lab"}}).json()
        rollout = admin.post("/api/rollouts", json={"module": "scaler", "devices": ["d1"]}).json()
        admin.post(f"/api/rollouts/{rollout['id']}/pause")
        admin.post("/api/tokens", json={"name": "ci", "role": "operator"})
        admin.delete("/api/tokens/ci")
        assert admin.delete("/api/models/scaler/versions/1").status_code == 409
        admin.post("/api/devices/d1/tags", json={"set": {"tier": "a"}, "remove": ["site"]})
    objects = [(e["action"], e["object"]) for e in audit_store.list_entries(db=server.fleet.db)]
    assert objects == [
        ("POST /api/models/{name}", {"model": "scaler", "version": 1, "sha256": model["sha256"]}),
        ("POST /api/bundles/from-model", {"model": "scaler", "module": "scaler", "version": 1,
                                          "digest": bundle["digest"]}),
        ("POST /api/devices", {"device_id": "d1", "tags": {"site": "lab"}}),
        ("POST /api/deployments", {"module": "scaler", "selector": {"site": "lab"},
                                   "deployment_id": deployment["id"], "version": 1}),
        ("POST /api/rollouts", {"module": "scaler", "devices": ["d1"], "rollout_id": rollout["id"],
                                "deployment_id": rollout["deployment_id"], "version": 1}),
        ("POST /api/rollouts/{rollout_id}/{action}", {"rollout_id": rollout["id"], "action": "pause"}),
        ("POST /api/tokens", {"token": "ci", "role": "operator"}),
        ("DELETE /api/tokens/{name}", {"token": "ci"}),
        ("DELETE /api/models/{name}/versions/{version}", {"model": "scaler", "version": 1}),
        ("POST /api/devices/{device_id}/tags", {"device_id": "d1", "set": {"tier": "a"}, "removed": ["site"]}),
    ]
    listed = cli("audit", "list", server=server, token=ADMIN_TOKEN)
    assert f"deployment_id={deployment['id']}" in listed.stdout and "token=ci" in listed.stdout
    as_json = cli("audit", "list", "--json", server=server, token=ADMIN_TOKEN)
    assert '"rollout_id": ' in as_json.stdout


def test_device_tag_is_admin_only_audited_and_moves_the_device_between_selector_deployments(server):
    from tests.server.builders import module_files, tar_gz

    with client(server, ADMIN_TOKEN) as admin:
        admin.post("/api/bundles/from-module", files={"file": ("m.tar.gz", tar_gz(module_files("scaler")))})
        admin.post("/api/devices", json={"id": "d1", "tags": {"site": "field"}})
        admin.post("/api/deployments", json={"module": "scaler", "selector": {"site": "lab"}, "allow_empty": True})
    tagged = cli("device", "tag", "d1", "site=lab", "tier=a", server=server, token=ADMIN_TOKEN)
    assert tagged.returncode == 0, tagged.stderr
    assert "tags match selector site=lab" in " ".join(tagged.stdout.split())
    with client(server, ADMIN_TOKEN) as admin:
        device = admin.get("/api/devices/d1").json()
    assert device["tags"] == {"site": "lab", "tier": "a"} and device["desired_generation"] == 1
    typo = cli("device", "tag", "d1", "--remove", "stie", server=server, token=ADMIN_TOKEN)
    assert typo.returncode == 1 and "device d1 has no tag 'stie' to remove (its tags: site, tier)" in typo.stderr
    removed = cli("device", "tag", "d1", "--remove", "site", "--json", server=server, token=ADMIN_TOKEN)
    assert removed.returncode == 0 and '"modules": []' in removed.stdout
    with client(server, ADMIN_TOKEN) as admin:
        device = admin.get("/api/devices/d1").json()
    assert device["tags"] == {"tier": "a"} and device["desired_generation"] == 2  # an empty desired state
    operator = make_token(server, "ops", "operator")
    refused = cli("device", "tag", "d1", "site=lab", server=server, token=operator)
    assert refused.returncode == 1 and "admin role" in refused.stderr
    with client(server, operator) as ops:
        assert ops.patch("/api/devices/d1", json={"tags": {"site": "lab"}}).status_code == 403
        assert ops.patch("/api/devices/d1", json={"name": "Door"}).status_code == 200
    assert [(e["actor"], e["status"]) for e in audit_store.list_entries(db=server.fleet.db)
            if e["action"] == "POST /api/devices/{device_id}/tags"] == [("admin", 200), ("admin", 400),
                                                                          ("admin", 200), ("ops", 403)]
