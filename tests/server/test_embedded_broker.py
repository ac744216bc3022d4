"""The embedded amqtt broker: retained messages, QoS 1 for offline sessions, large chunks, the server on it."""

from __future__ import annotations

import os
import socket
import time

import httpx
import pytest

from fleet_protocol import messages, topics
from fleet_protocol.signing import PublicKey
from fleet_server.clock import utc_now
from fleet_protocol.trust import TrustedState
from fleet_server.broker import EmbeddedBroker
from fleet_server.runner import ServerThread
from tests.support.sealed import open_chunks

from . import messages as msg
from .builders import module_files, tar_gz
from .conftest import ADMIN_TOKEN
from .mqtt_device import FakeDevice

CHUNK = messages.encode_chunk(os.urandom(262_144))


@pytest.fixture
def broker():
    embedded = EmbeddedBroker(host="127.0.0.1", port=0)
    embedded.start()
    yield embedded
    embedded.stop()


def test_a_retained_message_reaches_a_client_that_subscribes_later(broker):
    publisher = FakeDevice(broker.url, "server")
    publisher.publish("edgefleet/v1/devices/cam-1/desired", b'{"generation": 1}', retain=True)
    publisher.publish("edgefleet/v1/devices/cam-1/big", CHUNK, retain=True)
    late = FakeDevice(broker.url, "cam-1")
    try:
        late.subscribe("edgefleet/v1/devices/cam-1/#")
        late.wait_message("edgefleet/v1/devices/cam-1/desired")
        [big] = late.wait_message("edgefleet/v1/devices/cam-1/big")
        assert big.retain and big.payload == CHUNK
    finally:
        late.close()
        publisher.close()


def test_a_256_kib_chunk_goes_through_at_qos_1(broker):
    publisher, subscriber = FakeDevice(broker.url, "server"), FakeDevice(broker.url, "cam-1")
    try:
        subscriber.subscribe("edgefleet/v1/bundles/+/chunks")
        for _ in range(5):
            publisher.publish("edgefleet/v1/bundles/" + "a" * 64 + "/chunks", CHUNK)
        received = subscriber.wait_message("edgefleet/v1/bundles/" + "a" * 64 + "/chunks", count=5)
        assert all(m.payload == CHUNK and m.qos == 1 for m in received)
    finally:
        publisher.close()
        subscriber.close()


def test_qos1_messages_wait_for_a_persistent_session_that_is_offline(broker):
    sleeper = FakeDevice(broker.url, "sleeper", clean_session=False)
    sleeper.subscribe("queue/for/sleeper")
    sleeper.close()
    time.sleep(1.5)  # amqtt used to drop such sessions a second after they disconnected
    publisher = FakeDevice(broker.url, "server")
    publisher.publish("queue/for/sleeper", b"while you were away")
    publisher.close()
    sleeper = FakeDevice(broker.url, "sleeper", clean_session=False)
    try:
        [message] = sleeper.wait_message("queue/for/sleeper")
        assert message.payload == b"while you were away"
    finally:
        sleeper.close()


def test_a_reconnecting_session_gets_only_its_own_retained_messages(broker):
    other = FakeDevice(broker.url, "cam-2")
    other.subscribe("edgefleet/v1/devices/cam-2/desired")
    other.publish("edgefleet/v1/devices/cam-2/desired", b"for cam-2 only", retain=True)
    device = FakeDevice(broker.url, "cam-1", clean_session=False)
    device.subscribe("edgefleet/v1/devices/cam-1/desired")
    device.close()
    device = FakeDevice(broker.url, "cam-1", clean_session=False)
    try:
        time.sleep(1.0)
        assert [m.topic for m in device.received] == []
    finally:
        device.close()
        other.close()


def test_a_busy_port_is_refused_with_a_clear_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError):
            EmbeddedBroker(host="127.0.0.1", port=taken.getsockname()[1]).start()


def test_the_server_runs_on_its_embedded_broker(config):
    weights = os.urandom(700_000)  # chunks of up to 256 KiB
    files = {**module_files(files=["model.onnx", "main.py", "sample.json", "weights.bin"]), "weights.bin": weights}
    with ServerThread(config) as server:
        assert server.admin_token == ADMIN_TOKEN and server.broker_url.startswith("mqtt://127.0.0.1:")
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as http:
            assert http.get("/api/health").json()["broker"] == "connected"
            bundle = http.post("/api/bundles/from-module", files={"file": ("m.tar.gz", tar_gz(files))}).json()
            http.post("/api/devices", json={"id": "cam-1"})
            assert http.post("/api/deployments", json={"module": "scaler", "devices": ["cam-1"]}).status_code == 201
        key = PublicKey.from_hex(server.signing_public_key_hex)
        device = FakeDevice(server.broker_url, "cam-1")
        try:
            device.subscribe(topics.device_topic("cam-1", "desired"))
            [message] = device.wait_message(topics.device_topic("cam-1", "desired"))
            trust = TrustedState("cam-1", [key])
            state = trust.verify_desired_state(messages.parse_desired_envelope(message.payload), now=utc_now())
            manifest = trust.verify_module(state.modules[0], installed=None, now=utc_now())
            assert manifest.digest == bundle["digest"]
            chunks_topic = topics.bundle_chunks_topic(bundle["digest"])
            device.subscribe(chunks_topic)
            wanted = [c.sha256 for c in manifest.file("weights.bin").chunks]
            device.publish(topics.device_topic("cam-1", "fetch"), msg.fetch("cam-1", bundle["digest"], wanted))
            device.wait_message(chunks_topic, count=len(wanted))
            received = open_chunks((m.payload for m in device.messages(chunks_topic)), state.modules[0].content_key,
                                   device_id="cam-1", bundle_digest=bundle["digest"])
            assert b"".join(received[c] for c in wanted) == weights
            assert len(wanted) > 1 and max(len(received[c]) for c in wanted) <= 262_144  # cut by content
        finally:
            device.close()
    with ServerThread(config) as again:  # a second start of the same data dir creates no new token
        assert again.admin_token is None
        assert again.signing_public_key_hex == server.signing_public_key_hex


def test_an_offline_session_queues_at_most_max_queued_messages(broker, monkeypatch):
    monkeypatch.setattr("fleet_server.broker.MAX_QUEUED_MESSAGES", 3)
    sleeper = FakeDevice(broker.url, "sleeper", clean_session=False)
    sleeper.subscribe("queue/for/sleeper")
    sleeper.close()
    publisher = FakeDevice(broker.url, "server")
    for i in range(6):
        publisher.publish("queue/for/sleeper", str(i).encode())
    publisher.close()
    sleeper = FakeDevice(broker.url, "sleeper", clean_session=False)
    try:
        received = sleeper.wait_message("queue/for/sleeper", count=3)
        time.sleep(0.5)
        assert sorted(m.payload for m in sleeper.messages("queue/for/sleeper")) == [b"0", b"1", b"2"]
        assert len(received) == 3
    finally:
        sleeper.close()
