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
