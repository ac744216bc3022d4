"""MqttLink attached to a shared MqttLoop behaves as with its own thread: subscribe, route, PUBACKs, will."""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt

from edge_agent.mqtt_link import MqttLink
from simulators.mqtt_loop import MqttLoop
from tests.support.net import wait_for


def make_link(broker, loop: MqttLoop, name: str, acks: list[int], hooks: list[str]) -> MqttLink:
    link = MqttLink(client_id=name, host=broker.host, port=broker.port, keepalive_s=5,
                    will=(f"link-test/{name}/status", b"offline-will"),
                    on_connect=lambda: hooks.append(threading.current_thread().name),
                    on_puback=acks.append, reconnect_min_s=0.2, reconnect_max_s=1.0, loop=loop)
    return link


def watch(broker, topic: str) -> tuple[mqtt.Client, list[tuple[str, bytes]]]:
    seen: list[tuple[str, bytes]] = []
    ready = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"watch-{topic.replace('/', '-')}",
                         protocol=mqtt.MQTTv311)
    client.on_connect = lambda c, *args: c.subscribe(topic, qos=1)
    client.on_subscribe = lambda *args: ready.set()
    client.on_message = lambda c, u, message: seen.append((message.topic, message.payload))
    client.connect(broker.host, broker.port)
    client.loop_start()
    assert ready.wait(10)
    return client, seen


def test_links_on_one_loop_subscribe_route_and_report_pubacks(mosquitto):
    loop = MqttLoop(seed=7)
    loop.start()
    acks: list[int] = []
    hooks: list[str] = []
    links = [make_link(mosquitto, loop, f"dev-{i}", acks, hooks) for i in range(3)]
    received: list[tuple[str, bytes]] = []
    try:
        for link in links:
            link.start()
        for link in links:
            assert link.wait_connected(20)
        wait_for(lambda: len(hooks) == 3, timeout=10, what="the on-connect hooks")
        assert set(hooks) == {"mqtt-loop"}
        for i, link in enumerate(links):
            link.subscribe(f"link-test/dev-{i}/in", lambda topic, payload: received.append((topic, payload)))
        mids = [link.publish(f"link-test/dev-{(i + 1) % 3}/in", b"ping", qos=1) for i, link in enumerate(links)]
        wait_for(lambda: len(received) == 3, timeout=10, what="routed messages")
        assert sorted(t for t, _ in received) == [f"link-test/dev-{i}/in" for i in range(3)]
        wait_for(lambda: sorted(acks) == sorted(mids), timeout=10, what="PUBACKs")
    finally:
        for link in links:
            link.stop()
        loop.stop()
    assert loop.clients == 0


def test_stop_publishes_last_status_and_abrupt_stop_leaves_the_will(mosquitto):
    loop = MqttLoop(seed=8)
    loop.start()
    watcher, seen = watch(mosquitto, "link-test/+/status")
    acks: list[int] = []
    hooks: list[str] = []
    polite, crashed = (make_link(mosquitto, loop, name, acks, hooks) for name in ("polite", "crashed"))
    try:
        for link in (polite, crashed):
            link.start()
            assert link.wait_connected(20)
        polite.stop(last=("link-test/polite/status", b"offline-clean"))
        crashed.stop(abrupt=True)
        wait_for(lambda: len(seen) == 2, timeout=20, what="both status messages")
        assert sorted(seen) == [("link-test/crashed/status", b"offline-will"),
                                ("link-test/polite/status", b"offline-clean")]
        assert not crashed.connected and not polite.connected
    finally:
        watcher.loop_stop()
        watcher.disconnect()
        loop.stop()


def test_link_on_a_loop_reconnects_and_resubscribes_after_a_broker_restart(mosquitto):
    loop = MqttLoop(seed=9)
    loop.start()
    acks: list[int] = []
    hooks: list[str] = []
    link = make_link(mosquitto, loop, "restarted", acks, hooks)
    received: list[bytes] = []
    try:
        link.start()
        assert link.wait_connected(20)
        link.subscribe("link-test/restarted/in", lambda topic, payload: received.append(payload))
        mosquitto.restart()
        wait_for(lambda: len(hooks) == 2 and link.connected, timeout=30, what="the link to reconnect")
        publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="restart-publisher",
                                protocol=mqtt.MQTTv311)
        publisher.connect(mosquitto.host, mosquitto.port)
        publisher.loop_start()
        publisher.publish("link-test/restarted/in", b"after", qos=1).wait_for_publish(10)
        publisher.loop_stop()
        publisher.disconnect()
        wait_for(lambda: received == [b"after"], timeout=20, what="a message after the restart")
    finally:
        link.stop()
        loop.stop()


def test_abrupt_stop_of_a_link_on_its_own_thread_also_leaves_the_will(mosquitto):
    watcher, seen = watch(mosquitto, "link-test/+/status")
    link = MqttLink(client_id="threaded", host=mosquitto.host, port=mosquitto.port, keepalive_s=5,
                    will=("link-test/threaded/status", b"offline-will"))
    try:
        link.start()
        assert link.wait_connected(20)
        link.stop(abrupt=True)
        wait_for(lambda: seen == [("link-test/threaded/status", b"offline-will")], timeout=20, what="the will")
        assert not link.connected
    finally:
        watcher.loop_stop()
        watcher.disconnect()
