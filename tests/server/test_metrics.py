"""``GET /metrics`` on the server: who may read it, and what the fleet gauges, counters and histograms say."""

from __future__ import annotations

from datetime import timedelta

import httpx
from prometheus_client.parser import text_string_to_metric_families

from fleet_protocol import messages, topics
from fleet_protocol.messages import TelemetryBatch, TelemetryRecord
from fleet_protocol.timestamps import to_iso
from fleet_server.clock import utc_now
from fleet_server.store import audit as audit_store
from fleet_server.store import devices as device_store
from tests.support.net import wait_for
from tests.support.postgres import BOTH_ENGINES

from . import messages as msg
from .conftest import ADMIN_TOKEN
from .test_devices_and_deployments import build

pytestmark = BOTH_ENGINES  # the store-touching tests run on SQLite and PostgreSQL


def scrape(api) -> dict[tuple[str, frozenset], float]:
    """``{(sample name, labels): value}`` of every sample the server's /metrics answers now."""
    response = api.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def feed(fleet, device_id: str, kind: str, payload: bytes) -> None:
    fleet.handlers.handle(topics.device_topic(device_id, kind), payload)


def test_metrics_need_an_api_token_of_any_role(api):
    assert api.get("/metrics", headers={"Authorization": ""}).status_code == 401
    assert api.get("/metrics", headers={"Authorization": "Bearer not-a-token"}).status_code == 401
    viewer = api.post("/api/tokens", json={"name": "prometheus", "role": "viewer"}).json()["token"]
    response = api.get("/metrics", headers={"Authorization": f"Bearer {viewer}"})
    assert response.status_code == 200 and "edgefleet_devices" in response.text


def test_devices_are_counted_by_status_and_firmware_profile_with_revoked_apart(api, fleet):
    for device_id, state, profile in [("cam-1", "online", "generic-cpu"), ("cam-2", "online", "generic-cpu"),
                                      ("pi-1", "online", "raspberry-pi-5"), ("pi-2", "offline", "raspberry-pi-5"),
                                      ("pi-3", "online", "raspberry-pi-5")]:
        feed(fleet, device_id, "status", msg.status(device_id, state, profile=profile))
    device_store.set_revoked(db=fleet.db, device_id="pi-3", revoked=to_iso(utc_now()))
    api.post("/api/devices", json={"id": "spare", "tags": {}})  # registered, never seen
    samples = scrape(api)
    assert value(samples, "edgefleet_devices", status="online", profile="generic-cpu") == 2
    assert value(samples, "edgefleet_devices", status="online", profile="raspberry-pi-5") == 1
    assert value(samples, "edgefleet_devices", status="offline", profile="raspberry-pi-5") == 1
    assert value(samples, "edgefleet_devices", status="revoked", profile="raspberry-pi-5") == 1
    assert value(samples, "edgefleet_devices", status="unknown", profile="") == 1


def test_rollouts_are_counted_by_state(api, fleet):
    build(api)
    ids = [api.post("/api/rollouts", json={"module": "scaler", "selector": {"site": "later"},
                                           "allow_empty": True}).json()["id"] for _ in range(3)]
    assert api.post(f"/api/rollouts/{ids[0]}/pause").status_code == 200
    samples = scrape(api)
    assert value(samples, "edgefleet_rollouts", state="paused") == 1
    assert value(samples, "edgefleet_rollouts", state="running") == 2
    assert value(samples, "edgefleet_rollouts", state="rolled_back") == 0  # a state none is in reads 0, not absent


def test_api_latency_is_labelled_by_route_template_never_by_the_concrete_path(api):
    for device_id in ("ghost-1", "ghost-2", "ghost-3"):
        assert api.get(f"/api/devices/{device_id}").status_code == 404
    assert api.request("BREW", "/api/devices").status_code == 405
    api.get("/api/no-such-route/secret-name")
    samples = scrape(api)
    assert value(samples, "edgefleet_http_request_duration_seconds_count", method="GET",
                 route="/api/devices/{device_id}", status="404") == 3
    assert value(samples, "edgefleet_http_request_duration_seconds_count", method="other", route="other",
                 status="405") == 1
    assert value(samples, "edgefleet_http_request_duration_seconds_count", method="GET", route="other",
                 status="404") == 1
    routes = {dict(labels).get("route") for name, labels in samples if name.startswith("edgefleet_http_")}
    assert not any("ghost" in r or "secret" in r for r in routes), routes


def test_ingest_counts_records_and_observes_the_age_of_each_batch_oldest_record(api, fleet):
    two_minutes_ago = to_iso(utc_now() - timedelta(seconds=120))
    records = (TelemetryRecord(1, two_minutes_ago, "heartbeat", {}), TelemetryRecord(2, to_iso(utc_now()),
                                                                                     "heartbeat", {}))
    batch = messages.encode(TelemetryBatch("cam-1", "outbox-a", records).to_dict())
    feed(fleet, "cam-1", "telemetry", batch)
    feed(fleet, "cam-1", "telemetry", batch)  # redelivered: counted again, stored once
    samples = scrape(api)
    assert value(samples, "edgefleet_telemetry_records_received_total") == 4
    assert value(samples, "edgefleet_telemetry_records_duplicate_total") == 2
    assert value(samples, "edgefleet_telemetry_ingest_lag_seconds_bucket", le="60.0") == 0
    assert value(samples, "edgefleet_telemetry_ingest_lag_seconds_bucket", le="300.0") == 1  # the redelivery: no
    assert value(samples, "edgefleet_telemetry_ingest_lag_seconds_count") == 1  # new record stored, no lag observed


def test_refused_device_messages_are_counted_by_topic_kind(api, fleet):
    feed(fleet, "cam-1", "status", b"{not json")
    feed(fleet, "cam-1", "status", msg.status("cam-2"))  # another device's status on cam-1's topic
    feed(fleet, "cam-1", "telemetry", b"[]")
    samples = scrape(api)
    assert value(samples, "edgefleet_mqtt_messages_refused_total", kind="status") == 2
    assert value(samples, "edgefleet_mqtt_messages_refused_total", kind="telemetry") == 1


def test_a_single_sqlite_server_is_the_leader_at_epoch_one(api):
    samples = scrape(api)
    assert (value(samples, "edgefleet_server_leader"), value(samples, "edgefleet_server_leader_epoch")) == (1, 1)
    assert {k: api.get("/api/health").json()[k] for k in ("role", "leader_epoch")} == {"role": "leader",
                                                                                       "leader_epoch": 1}


def test_broker_link_state_shows_connected_and_how_often_it_connected(server, mosquitto):
    api = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    samples = scrape(api)
    assert value(samples, "edgefleet_broker_connected") == 1
    assert value(samples, "edgefleet_broker_connects_total") == 1
    assert value(samples, "process_resident_memory_bytes") > 0
    mosquitto.stop()
    wait_for(lambda: value(scrape(api), "edgefleet_broker_connected") == 0, timeout=30, what="the link to be down")
    mosquitto.start()
    wait_for(lambda: value(scrape(api), "edgefleet_broker_connected") == 1, timeout=30, what="the link to be up")
    assert value(scrape(api), "edgefleet_broker_connects_total") == 2  # it reconnected once


def test_a_path_parameter_equal_to_a_path_segment_leaves_the_route_template_whole(api, fleet):
    """Audit entries and the latency labels take the template from the route FastAPI picked, one way for both."""
    assert api.post("/api/devices", json={"id": "devices", "tags": {}}).status_code == 201
    assert api.patch("/api/devices/devices", json={"name": "Door"}).status_code == 200
    actions = [e["action"] for e in audit_store.list_entries(db=fleet.db) if e["target"] == "/api/devices/devices"]
    assert actions == ["PATCH /api/devices/{device_id}"]
    samples = scrape(api)
    assert value(samples, "edgefleet_http_request_duration_seconds_count", method="PATCH",
                 route="/api/devices/{device_id}", status="200") == 1
