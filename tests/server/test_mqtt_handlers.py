"""The server against a real Mosquitto: device messages in, desired state and chunks out."""

from __future__ import annotations

import hashlib
from contextlib import closing

import httpx
import pytest

from fleet_protocol import messages, topics
from fleet_protocol.manifest import BundleManifest
from fleet_protocol.messages import ModuleReport
from fleet_protocol.signing import PublicKey
from fleet_server.clock import utc_now
from fleet_protocol.trust import TrustedState, check_chunk
from tests.support.net import wait_for
from tests.support.postgres import BOTH_ENGINES
from tests.support.sealed import open_chunks

from . import messages as msg
from .builders import module_files, tar_gz
from .conftest import ADMIN_TOKEN
from .mqtt_device import FakeDevice

pytestmark = BOTH_ENGINES  # the store-touching tests run on SQLite and PostgreSQL


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30) as c:
        yield c


@pytest.fixture
def device(server):
    fake = FakeDevice(server.broker_url, "cam-1")
    yield fake
    fake.close()


def build(http) -> dict:
    response = http.post("/api/bundles/from-module", files={"file": ("m.tar.gz", tar_gz(module_files()))})
    assert response.status_code == 201, response.text
    return response.json()


def test_health_reports_the_broker_link(server, http):
    assert http.get("/api/health").json()["broker"] == "connected"


def test_status_and_reported_messages_update_the_device(server, http, device):
    device.publish(topics.device_topic("cam-1", "status"), msg.status("cam-1", tags={"site": "lab"}), retain=True)
    wait_for(lambda: http.get("/api/devices/cam-1").status_code == 200, what="auto-registration")
    assert http.get("/api/devices/cam-1").json()["status"] == "online"
    device.publish(topics.device_topic("cam-1", "reported"), msg.reported("cam-1", [ModuleReport("x", "absent")]))
    wait_for(lambda: http.get("/api/devices/cam-1").json()["modules"], what="reported state")
    device.publish(topics.device_topic("cam-1", "status"), msg.status("cam-1", "offline"), retain=True)
    wait_for(lambda: http.get("/api/devices/cam-1").json()["status"] == "offline", what="offline")


def test_deployment_publishes_a_retained_signed_desired_state_for_late_subscribers(server, http):
    bundle = build(http)
    assert http.post("/api/devices", json={"id": "cam-7"}).status_code == 201
    topic = topics.device_topic("cam-7", "desired")
    # The API answers once the publish is queued, not once the broker has it: a device that subscribed before
    # the server's network thread sent it would get it live, not retained. So the late device connects only
    # after an earlier subscriber saw the document, which the broker routes only after it kept the copy.
    with closing(FakeDevice(server.broker_url, "observer")) as observer:
        observer.subscribe(topic)
        assert http.post("/api/deployments", json={"module": "scaler", "devices": ["cam-7"]}).status_code == 201
        observer.wait_message(topic)
    late = FakeDevice(server.broker_url, "cam-7")
    try:
        late.subscribe(topic)
        [message] = late.wait_message(topic)
        assert message.retain
        keys = [PublicKey.from_hex(k["public_key"]) for k in http.get("/api/keys").json()["signing_keys"]]
        trust = TrustedState("cam-7", keys)
        state = trust.verify_desired_state(messages.parse_desired_envelope(message.payload), now=utc_now())
        assert state.generation == 1
        assert trust.verify_module(state.modules[0], installed=None, now=utc_now()).digest == bundle["digest"]
    finally:
        late.close()


def test_desired_state_is_republished_when_the_link_reconnects(server, http, mosquitto, device):
    build(http)
    http.post("/api/devices", json={"id": "cam-1"})
    http.post("/api/deployments", json={"module": "scaler", "devices": ["cam-1"]})
    topic = topics.device_topic("cam-1", "desired")
    device.publish(topic, b"", retain=True)  # wipe the retained copy behind the server's back
    mosquitto.restart()
    wait_for(lambda: http.get("/api/health").json()["broker"] == "connected", what="the link to reconnect")
    late = FakeDevice(server.broker_url, "cam-1-late")
    try:
        late.subscribe(topic)
        [message] = late.wait_message(topic)
        assert messages.parse_desired_envelope(message.payload)["signed"]["generation"] == 1
    finally:
        late.close()


def test_a_redelivered_telemetry_batch_is_stored_once(server, http, device):
    topic = topics.device_topic("cam-1", "telemetry")
    device.publish(topic, msg.telemetry("cam-1", [1, 2, 3]))
    device.publish(topic, msg.telemetry("cam-1", [1, 2, 3]))  # the outbox resends after a lost PUBACK
    device.publish(topic, msg.telemetry("cam-1", [3, 4]))
    device.publish(topic, msg.telemetry("cam-1", [1], outbox_id="outbox-b"))  # a re-provisioned device
    wait_for(lambda: len(http.get("/api/telemetry", params={"device_id": "cam-1"}).json()) >= 5, what="telemetry")
    records = http.get("/api/telemetry", params={"device_id": "cam-1"}).json()
    assert sorted((r["outbox_id"], r["seq"]) for r in records) == [
        ("outbox-a", 1), ("outbox-a", 2), ("outbox-a", 3), ("outbox-a", 4), ("outbox-b", 1)]


def test_malformed_payloads_on_every_topic_are_counted_and_the_server_keeps_working(server, http, device):
    bad = [
        (topics.device_topic("cam-1", "status"), b"\xff\xfe not json"),
        (topics.device_topic("cam-1", "reported"), b'{"type": "reported-state"}'),
        (topics.device_topic("cam-1", "telemetry"), b"[1, 2, 3]"),
        (topics.device_topic("cam-1", "fetch"), b'{"type": "fetch-request", "chunks": []}'),
        (topics.device_topic("cam-1", "status"), msg.status("cam-2")),  # payload names another device
        ("edgefleet/v1/devices/Not_Valid/status", msg.status("cam-1")),
    ]
    for topic, payload in bad:
        device.publish(topic, payload)
    wait_for(lambda: http.get("/api/health").json()["malformed_messages"] >= len(bad), what="malformed count")
    health = http.get("/api/health").json()
    assert health["malformed_messages"] == len(bad)
    assert health["malformed_by_kind"] == {"status": 2, "reported": 1, "telemetry": 1, "fetch": 1, "topic": 1}
    device.publish(topics.device_topic("cam-1", "status"), msg.status("cam-1"))
    wait_for(lambda: http.get("/api/devices/cam-1").status_code == 200, what="a good message after bad ones")
    assert http.get("/api/devices/cam-2").status_code == 404


def test_fetch_request_is_answered_with_the_chunks_of_the_manifest(server, http, device):
    server.config.chunk_size_bytes = 64
    bundle = build(http)
    manifest = BundleManifest.from_dict(http.get(f"/api/bundles/{bundle['digest']}").json()["manifest"]["signed"])
    wanted = list(manifest.chunk_sizes())
    assert len(wanted) > 3
    http.post("/api/devices", json={"id": "cam-1"})  # a device may fetch only the bundles deployed to it
    assert http.post("/api/deployments", json={"module": "scaler", "devices": ["cam-1"]}).status_code == 201
    device.subscribe(topics.device_topic("cam-1", "desired"))
    [desired] = device.wait_message(topics.device_topic("cam-1", "desired"))
    content_key = messages.parse_desired_envelope(desired.payload)["signed"]["modules"][0]["content_key"]
    chunks_topic = topics.bundle_chunks_topic(bundle["digest"])
    device.subscribe(chunks_topic)
    device.publish(topics.device_topic("cam-1", "fetch"), msg.fetch("cam-1", bundle["digest"], wanted))
    device.wait_message(chunks_topic, count=len(wanted))
    received = open_chunks((m.payload for m in device.messages(chunks_topic)), content_key, device_id="cam-1",
                           bundle_digest=bundle["digest"])
    for sha256, data in received.items():
        check_chunk(manifest, sha256, data)
    assert set(received) == set(wanted)
    model = manifest.file("model.onnx")
    assembled = b"".join(received[c.sha256] for c in model.chunks)
    assert hashlib.sha256(assembled).hexdigest() == model.sha256


def test_fetch_for_an_unknown_bundle_or_a_foreign_chunk_is_counted_not_served(server, http, device):
    bundle = build(http)
    http.post("/api/devices", json={"id": "cam-1"})
    assert http.post("/api/deployments", json={"module": "scaler", "devices": ["cam-1"]}).status_code == 201
    device.publish(topics.device_topic("cam-1", "fetch"), msg.fetch("cam-1", "0" * 64, ["1" * 64]))
    device.subscribe(topics.bundle_chunks_topic(bundle["digest"]))
    device.publish(topics.device_topic("cam-1", "fetch"), msg.fetch("cam-1", bundle["digest"], ["2" * 64]))
    wait_for(lambda: http.get("/api/health").json()["malformed_by_kind"] == {"fetch": 1, "fetch_refused": 1},
             what="fetch refusals: an unknown bundle is not in the device's desired state, a foreign chunk")
    assert device.messages(topics.bundle_chunks_topic(bundle["digest"])) == []
