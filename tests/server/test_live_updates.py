"""Dashboard live updates: committed store writes notify their topic, coalesced, to every replica's streams.

Unit rules on :class:`fleet_server.changes.Changes` and on the store hook with a real SQLite store; then two
real server processes on one PostgreSQL database: a change made through one replica reaches an
``/api/events`` stream open on the other (``LISTEN/NOTIFY``).
"""

from __future__ import annotations

import json

import httpx
import pytest

from fleet_server.changes import Changes
from fleet_server.store import changes as change_store
from fleet_server.store import devices as device_store
from tests.support.fleet import ADMIN_TOKEN, ServerProcess, start_server
from tests.support.net import wait_for


def test_a_burst_of_changes_is_sent_once_per_topic():
    sent: list[list[str]] = []
    changes = Changes(send=sent.append, coalesce_s=1.0)
    try:
        for _ in range(1000):  # telemetry at thousands of batches a second
            changes.changed("telemetry")
        changes.changed("devices")
        wait_for(lambda: sent, what="the coalesced notification")
        assert sent == [["devices", "telemetry"]]
    finally:
        changes.close()


def test_writes_to_watched_tables_notify_after_commit_and_never_on_rollback(fleet):
    heard: list[str] = []
    undo = change_store.watch(fleet.db, heard.append)
    try:
        with pytest.raises(RuntimeError, match="rolled back"):
            with fleet.db.transaction():
                device_store.create_device(db=fleet.db, device_id="dev-1", name=None, tags={}, created="now")
                raise RuntimeError("rolled back")
        assert heard == []
        device_store.create_device(db=fleet.db, device_id="dev-1", name=None, tags={}, created="now")
        assert heard == ["devices"]
        device_store.touch(db=fleet.db, device_id="dev-1", seen="2026-01-01T00:00:00Z")  # last_seen: not shown
        assert heard == ["devices"]
    finally:
        undo()


def _change_events(response: httpx.Response):
    event = None
    for line in response.iter_lines():
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: ") and event == "change":
            yield json.loads(line.removeprefix("data: "))


def test_a_change_through_one_replica_reaches_a_stream_open_on_another(tmp_path, mosquitto, database_url):
    replicas: list[ServerProcess] = []
    try:
        for name in ("a", "b"):
            replicas.append(start_server(tmp_path, mosquitto.url, "--database-url", database_url, "--server-id", name,
                                         data_dir=tmp_path / "data", name=name))
        a, b = replicas
        with httpx.stream("GET", f"{a.url}/api/events", params={"token": ADMIN_TOKEN}, timeout=30) as stream:
            events = _change_events(stream)
            next(events)  # the stream's first event: where it starts
            with b.api() as api:
                assert api.post("/api/devices", json={"id": "made-on-b"}).status_code == 201
            seen = next(events)
        assert seen["topics"] == ["devices"]
        with a.api() as api:
            assert api.get("/api/devices/made-on-b").status_code == 200
    finally:
        for replica in replicas:
            replica.stop()
