"""A link given several brokers fails over when the one it uses dies: tested on two real Mosquittos.

Two independent Mosquitto processes stand in for two nodes of a cluster (they share nothing, so only the
link's own behaviour is checked here: reconnect elsewhere, subscribe again, publish again). The clustered
broker, where sessions and retained messages move with the device, is tests/faults/test_broker_cluster_failover.py.
"""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt
import pytest

from edge_agent.mqtt_link import MqttLink
from fleet_protocol.broker_urls import parse_broker_urls
from fleet_server.mqtt_link import MqttLink as ServerMqttLink
from tests.support.mosquitto import start_mosquitto
from tests.support.net import wait_for

TOPIC = "edgefleet/v1/devices/dev-1/desired"


@pytest.fixture
def two_brokers(tmp_path):
    brokers = [start_mosquitto(tmp_path / name) for name in ("a", "b")]
    yield brokers
    for broker in brokers:
        broker.stop()


def _publisher(broker) -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.connect(broker.host, broker.port)
    client.loop_start()
    return client


def test_agent_link_fails_over_to_the_next_broker_and_subscribes_again(two_brokers):
    received: list[bytes] = []
    pubacks: list[int] = []
    link = MqttLink(client_id="edgefleet-agent-dev-1", brokers=parse_broker_urls(b.url for b in two_brokers),
                    keepalive_s=5, reconnect_min_s=0.2, reconnect_max_s=1.0, on_puback=pubacks.append)
    link.start()
    try:
        assert link.wait_connected(10)
        link.subscribe(TOPIC, lambda topic, payload: received.append(payload))
        first = next(b for b in two_brokers if b.port == link.port)
        other = next(b for b in two_brokers if b is not first)
        first.process.kill()  # kill -9: no DISCONNECT, the port is gone
        first.process.wait()
        wait_for(lambda: link.connected and link.port == other.port, timeout=20,
                 what="the link to reconnect to the other broker")
        publisher = _publisher(other)
        try:  # the subscription was made again on the new node: a message there reaches the handler
            wait_for(lambda: publisher.publish(TOPIC, b"after failover", qos=1) and b"after failover" in received,
                     timeout=10, what="the desired state published on the other broker")
        finally:
            publisher.loop_stop()
            publisher.disconnect()
        mid = link.publish("edgefleet/v1/devices/dev-1/telemetry", b"{}")
        wait_for(lambda: mid in pubacks, timeout=10, what="the PUBACK from the other broker")
        assert link.reconnect_s and link.reconnect_s[0] > 0
    finally:
        link.stop()


def test_server_link_fails_over_to_the_next_broker_and_subscribes_again(two_brokers):
    received: list[str] = []
    connects = threading.Event()
    link = ServerMqttLink(",".join(b.url for b in two_brokers), on_message=lambda t, p, r: received.append(t),
                          on_connected=connects.set, keepalive_s=5)
    link.start()
    try:
        assert link.wait_connected(10)
        first = next(b for b in two_brokers if b.url == link.broker_url)
        other = next(b for b in two_brokers if b is not first)
        first.process.kill()
        first.process.wait()
        wait_for(lambda: link.connected and link.broker_url == other.url, timeout=30,
                 what="the server link to reconnect to the other broker")
        publisher = _publisher(other)
        try:
            topic = "edgefleet/v1/devices/dev-1/status"
            wait_for(lambda: publisher.publish(topic, b"{}", qos=1) and topic in received, timeout=10,
                     what="a device message on the other broker")
        finally:
            publisher.loop_stop()
            publisher.disconnect()
        assert link.connects == 2
    finally:
        link.stop()
