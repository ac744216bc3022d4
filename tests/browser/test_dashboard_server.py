"""The dashboard's server side without a browser: the event stream and the static files."""

from __future__ import annotations

import json
import re

import httpx

from fleet_server.dashboard import router
from tests.server.builders import tiny_onnx

from .conftest import ADMIN_TOKEN

EXTERNAL_URL = re.compile(r"https?://(?!www\.w3\.org/2000/svg)")


def change_events(response: httpx.Response):
    """The ``data`` of each ``change`` event, as the stream delivers them."""
    event = None
    for line in response.iter_lines():
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: ") and event == "change":
            yield json.loads(line.removeprefix("data: "))
        elif not line:
            event = None


def test_event_stream_refuses_a_wrong_or_missing_token(server):
    wrong = httpx.get(f"{server.url}/api/events", params={"token": "not-the-token"})
    missing = httpx.get(f"{server.url}/api/events")
    assert wrong.status_code == 401 and wrong.json()["detail"] == "the API token is not valid"
    assert missing.status_code == 401 and "token is required" in missing.json()["detail"]


def test_event_stream_sends_a_change_when_a_device_is_added(server):
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with httpx.stream("GET", f"{server.url}/api/events", params={"token": ADMIN_TOKEN}, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = change_events(response)
        first = next(events)
        assert set(first["topics"]) == set(router.TOPICS)
        created = httpx.post(f"{server.url}/api/devices", json={"id": "stream-probe"}, headers=headers)
        assert created.status_code == 201, created.text
        second = next(events)
    assert second["topics"] == ["devices"] and second["version"] != first["version"]


def test_event_stream_reports_a_new_rollout_under_its_own_topic(server):
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    created = httpx.post(f"{server.url}/api/models/probe", files={"file": ("probe.onnx", tiny_onnx())}, headers=headers)
    assert created.status_code == 201, created.text
    bundle = httpx.post(f"{server.url}/api/bundles/from-model", json={"model": "probe"}, headers=headers)
    assert bundle.status_code == 201, bundle.text
    with httpx.stream("GET", f"{server.url}/api/events", params={"token": ADMIN_TOKEN}, timeout=30) as response:
        events = change_events(response)
        next(events)
        rollout = httpx.post(f"{server.url}/api/rollouts", json={"module": "probe", "selector": {"ring": "none"},
                                                                    "allow_empty": True},
                             headers=headers)
        assert rollout.status_code == 201, rollout.text
        seen = set()
        for event in events:
            seen.update(event["topics"])
            if "rollouts" in seen:
                break
    assert "rollouts" in seen


def test_whoami_names_the_token_and_its_role_but_needs_a_valid_token(server):
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    made = httpx.post(f"{server.url}/api/tokens", json={"name": "whoami-viewer", "role": "viewer"}, headers=headers)
    assert made.status_code == 201, made.text
    viewer = httpx.get(f"{server.url}/api/whoami", headers={"Authorization": f"Bearer {made.json()['token']}"})
    assert viewer.status_code == 200 and viewer.json() == {"name": "whoami-viewer", "role": "viewer"}
    assert httpx.get(f"{server.url}/api/whoami", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(f"{server.url}/api/whoami").status_code == 401


def test_event_stream_ends_by_itself_so_a_stopping_server_is_not_held(server, monkeypatch):
    monkeypatch.setattr(router, "STREAM_LIFETIME_S", 0.5)
    with httpx.stream("GET", f"{server.url}/api/events", params={"token": ADMIN_TOKEN}, timeout=30) as response:
        body = "".join(response.iter_text())
    assert body.startswith(f"retry: {router.RECONNECT_DELAY_MS}\n\n") and "event: change" in body


def test_dashboard_is_served_at_root_with_a_same_origin_policy(server):
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.text
    for asset in ("/js/app.js", "/css/app.css", "/favicon.svg"):
        assert httpx.get(f"{server.url}{asset}").status_code == 200, asset


def test_api_errors_stay_json_with_the_dashboard_mounted(server):
    unknown = httpx.get(f"{server.url}/api/no-such-route")
    assert unknown.status_code == 404 and unknown.json() == {"detail": "Not Found"}
    assert httpx.get(f"{server.url}/api/devices").status_code == 401


def test_dashboard_files_load_nothing_from_another_host():
    offenders = [str(path.relative_to(router.STATIC_DIR)) for path in router.STATIC_DIR.rglob("*")
                 if path.is_file() and EXTERNAL_URL.search(path.read_text(encoding="utf-8"))]
    assert offenders == []
