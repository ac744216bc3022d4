"""Every MQTT feature edgefleet relies on, checked against a real three-node NATS cluster (tests/support/nats.py).

What holds (retained messages and persistent sessions that survive a node, QoS 1, the last will, a chunk-sized
payload) and what does not, written down in docs/brokers.md with how edgefleet copes: ``$share/...`` is taken
as a plain topic (no shared subscriptions: one server replica subscribes), and NATS 2.9 refuses topics with
a ``.`` (device ids with dots need NATS 2.10 or later). If a NATS upgrade changes one of these, its test fails
and the table in docs/brokers.md is due for an update.
"""

from __future__ import annotations

import threading
import uuid

import paho.mqtt.client as mqtt
import pytest

from fleet_protocol import topics
from tests.support.nats import NatsCluster, NatsNode, start_nats_cluster
from tests.support.net import wait_for

CHUNK_BYTES = 262_144  # ServerConfig.chunk_size_bytes


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> NatsCluster:
    started = start_nats_cluster(tmp_path_factory.mktemp("nats"))
    yield started
    started.stop()


class Client:
    """A paho client on one node that records what it receives and the SUBACK codes."""

    def __init__(self, node: NatsNode, client_id: str | None = None, *, will: str | None = None):
        self.received: list[tuple[str, bytes, bool]] = []
        self.granted: dict[int, list[bool]] = {}
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or uuid.uuid4().hex[:12],
                                  clean_session=False, protocol=mqtt.MQTTv311)
        if will is not None:
            self.client.will_set(will, b"offline", qos=1, retain=True)
        connected = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: connected.set()
        self.client.on_message = lambda c, u, m: self.received.append((m.topic, m.payload, bool(m.retain)))
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.granted.__setitem__(
            mid, [not rc.is_failure for rc in rcs])
        self.client.connect("127.0.0.1", node.mqtt_port, keepalive=10)
        self.client.loop_start()
        assert connected.wait(20), f"no CONNACK from {node.name}"

    def subscribe(self, topic: str) -> bool:
        """Subscribe at QoS 1; whether the broker granted it."""
        _, mid = self.client.subscribe(topic, 1)
        return wait_for(lambda: self.granted.get(mid), timeout=20, what=f"the SUBACK for {topic}") == [True]

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> bool:
        """Publish at QoS 1; whether the PUBACK came."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        try:
            info.wait_for_publish(10)
        except RuntimeError:
            return False
        return info.is_published()

    def close(self, *, abrupt: bool = False) -> None:
        if abrupt:
            self.client.socket().close()  # no DISCONNECT: the broker publishes the will
        else:
            self.client.disconnect()
        self.client.loop_stop()


def wait_for_quietly(check, timeout_s: float) -> bool:
    try:
        return bool(wait_for(check, timeout=timeout_s))
    except AssertionError:
        return False


def test_persistent_session_keeps_qos1_messages_for_a_device_that_returns_on_another_node(cluster):
    topic = topics.device_topic("away-1", "jobs")
    device = Client(cluster.nodes[0], "edgefleet-agent-away-1")
    assert device.subscribe(topic)
    device.close()
    server = Client(cluster.nodes[1])
    assert server.publish(topic, b"job while away")
    server.close()
    back = Client(cluster.nodes[2], "edgefleet-agent-away-1")  # same client id, another node: the same session
    wait_for(lambda: any(payload == b"job while away" for _, payload, _ in back.received), timeout=20,
             what="the QoS 1 message kept in the session")
    back.close()


def test_last_will_marks_a_vanished_device_offline(cluster):
    topic = topics.device_topic("gone-1", "status")
    server = Client(cluster.nodes[1])
    assert server.subscribe(topic)
    device = Client(cluster.nodes[2], will=topic)
    device.close(abrupt=True)
    wait_for(lambda: any(t == topic and p == b"offline" for t, p, _ in server.received), timeout=30,
             what="the last will")
    server.close()


def test_a_bundle_chunk_sized_message_passes(cluster):
    topic = topics.bundle_chunks_topic("a" * 64)
    device = Client(cluster.nodes[0])
    assert device.subscribe(topic)
    server = Client(cluster.nodes[1])
    assert server.publish(topic, b"c" * (CHUNK_BYTES + 4096))
    wait_for(lambda: any(len(p) == CHUNK_BYTES + 4096 for _, p, _ in device.received), timeout=20,
             what="the chunk")
    server.close()
    device.close()


def test_shared_subscriptions_are_granted_but_deliver_nothing_so_one_replica_subscribes(cluster):
    plain, shared = topics.server_subscriptions(shared=False)[2], topics.server_subscriptions(shared=True)[2]
    replica = Client(cluster.nodes[0])
    assert replica.subscribe(shared)  # NATS takes $share/edgefleet/... as an ordinary topic name
    witness = Client(cluster.nodes[0])
    assert witness.subscribe(plain)
    device = Client(cluster.nodes[1])
    topic = topics.device_topic("share-1", "telemetry")
    assert device.publish(topic, b"batch")
    wait_for(lambda: witness.received, timeout=20, what="the telemetry on the plain subscription")
    assert replica.received == [], "NATS now delivers $share subscriptions: update docs/brokers.md"
    for client in (replica, witness, device):
        client.close()


def test_nats_2_9_refuses_topics_with_a_dot_so_device_ids_there_must_not_have_one(cluster):
    device = Client(cluster.nodes[0])
    assert not device.subscribe(topics.device_topic("cam.1", "desired"))
    device.close()


def test_retained_desired_state_survives_the_loss_of_the_node_it_was_published_on(cluster):
    topic = topics.device_topic("keep-1", "desired")
    server = Client(cluster.nodes[0])
    assert server.publish(topic, b"signed desired state", retain=True)
    server.close()
    cluster.nodes[0].kill()  # the last test of the module: the cluster is not needed whole again
    device = Client(cluster.nodes[1])

    def retained() -> bool:  # subscribing again asks again: right after a kill the cluster elects new leaders
        device.subscribe(topic)
        return wait_for_quietly(lambda: (topic, b"signed desired state", True) in device.received, 3)

    wait_for(retained, timeout=60, interval=0, what="the retained desired state from a surviving node")
    device.close()
