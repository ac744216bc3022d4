"""MqttLoop against a real Mosquitto: many paho clients on one thread connect, publish, receive, reconnect."""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt

from simulators.mqtt_loop import MqttLoop
from tests.support.net import wait_for

CLIENTS = 500


class Counter:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.values: dict[str, int] = {}

    def add(self, key: str) -> None:
        with self.lock:
            self.values[key] = self.values.get(key, 0) + 1

    def __getitem__(self, key: str) -> int:
        with self.lock:
            return self.values.get(key, 0)


def make_clients(count: int, counter: Counter) -> list[mqtt.Client]:
    clients = []
    for i in range(count):
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"loop-test-{i}", clean_session=False,
                             protocol=mqtt.MQTTv311)

        def on_connect(client, userdata, flags, reason_code, properties, i=i):
            if not reason_code.is_failure:
                counter.add("connects")
                client.subscribe(f"loop-test/{i}/in", qos=1)

        client.on_connect = on_connect
        client.on_subscribe = lambda *args: counter.add("subacks")
        client.on_message = lambda client, userdata, message: counter.add("messages")
        client.on_publish = lambda *args: counter.add("pubacks")
        clients.append(client)
    return clients


def test_one_loop_connects_500_clients_that_publish_qos1_and_receive(mosquitto):
    counter = Counter()
    loop = MqttLoop(seed=1)
    loop.start()
    clients = make_clients(CLIENTS, counter)
    try:
        for client in clients:
            loop.connect(client, mosquitto.host, mosquitto.port, keepalive=30)
        wait_for(lambda: counter["subacks"] == CLIENTS, timeout=60, what="every client to connect and subscribe")
        assert loop.clients == CLIENTS
        # Publishing from this thread (not the loop's) exercises the thread-safe write registration.
        for i, client in enumerate(clients):
            client.publish(f"loop-test/{(i + 1) % CLIENTS}/in", b"hello", qos=1)
        wait_for(lambda: counter["pubacks"] == CLIENTS, timeout=60, what="a PUBACK for every publish")
        wait_for(lambda: counter["messages"] == CLIENTS, timeout=60, what="every client to receive its message")
    finally:
        for client in clients:
            loop.detach(client)
        loop.stop()


def test_every_client_reconnects_after_a_broker_restart(mosquitto):
    counter = Counter()
    loop = MqttLoop(reconnect_min_s=0.2, reconnect_max_s=2.0, seed=2)
    loop.start()
    clients = make_clients(100, counter)
    try:
        for client in clients:
            loop.connect(client, mosquitto.host, mosquitto.port, keepalive=30)
        wait_for(lambda: counter["connects"] == 100, timeout=60, what="every client to connect")
        mosquitto.restart()
        wait_for(lambda: counter["connects"] == 200, timeout=60, what="every client to reconnect")
        for i, client in enumerate(clients):
            client.publish(f"loop-test/{i}/in", b"again", qos=1)
        wait_for(lambda: counter["messages"] == 100, timeout=60, what="messages after the reconnect")
    finally:
        for client in clients:
            loop.detach(client)
        loop.stop()


def test_refused_connect_is_retried_until_the_broker_is_up(mosquitto):
    counter = Counter()
    mosquitto.stop()
    loop = MqttLoop(reconnect_min_s=0.1, reconnect_max_s=0.5, seed=3)
    loop.start()
    clients = make_clients(10, counter)
    try:
        for client in clients:
            loop.connect(client, mosquitto.host, mosquitto.port)
        mosquitto.start()
        wait_for(lambda: counter["connects"] == 10, timeout=30, what="clients to connect once the broker is up")
    finally:
        for client in clients:
            loop.detach(client)
        loop.stop()


def test_detach_sends_disconnect_and_a_crash_leaves_the_last_will(mosquitto):
    counter = Counter()
    loop = MqttLoop(seed=4)
    loop.start()
    watcher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="loop-test-watcher", protocol=mqtt.MQTTv311)
    wills: list[str] = []
    watcher.on_message = lambda client, userdata, message: wills.append(message.topic)
    watcher.on_connect = lambda client, *args: client.subscribe("loop-test/will/#", qos=1)
    watcher.on_subscribe = lambda *args: counter.add("watcher")
    loop.connect(watcher, mosquitto.host, mosquitto.port)
    clients = make_clients(2, counter)
    for i, client in enumerate(clients):
        client.will_set(f"loop-test/will/{i}", b"gone", qos=1)
        loop.connect(client, mosquitto.host, mosquitto.port)
    try:
        wait_for(lambda: counter["subacks"] == 2 and counter["watcher"] == 1, timeout=30, what="connections")
        assert loop.detach(clients[0], clean=True).wait(10)
        assert loop.detach(clients[1], clean=False).wait(10)
        wait_for(lambda: wills == ["loop-test/will/1"], timeout=30, what="only the crashed client's will")
        assert loop.clients == 1
    finally:
        loop.detach(watcher)
        loop.stop()


def test_call_later_runs_functions_on_the_loop_thread_in_time_order():
    loop = MqttLoop()
    loop.start()
    seen: list[tuple[str, bool]] = []
    done = threading.Event()
    try:
        loop.call_later(0.2, lambda: (seen.append(("late", loop.in_loop_thread())), done.set()))
        loop.call_later(0.05, lambda: seen.append(("early", loop.in_loop_thread())))
        cancelled = loop.call_later(0.1, lambda: seen.append(("cancelled", True)))
        cancelled.cancel()
        loop.call_soon(lambda: seen.append(("soon", loop.in_loop_thread())))
        assert done.wait(10)
        assert seen == [("soon", True), ("early", True), ("late", True)]
    finally:
        loop.stop()


def test_loop_misc_sends_keepalive_pings_for_every_client(mosquitto):
    counter = Counter()
    loop = MqttLoop(seed=5)
    loop.start()
    clients = make_clients(20, counter)
    for i, client in enumerate(clients):
        client.on_log = lambda client, userdata, level, text, i=i: counter.add(f"pong-{i}") if "PINGRESP" in text else None
    try:
        for client in clients:
            loop.connect(client, mosquitto.host, mosquitto.port, keepalive=1)
        wait_for(lambda: all(counter[f"pong-{i}"] >= 2 for i in range(20)), timeout=30,
                 what="two pings of every client answered by the broker")
        assert counter["connects"] == 20
    finally:
        for client in clients:
            loop.detach(client)
        loop.stop()


def test_a_partition_disconnects_every_client_and_healing_reconnects_them(mosquitto):
    counter = Counter()
    loop = MqttLoop(reconnect_min_s=0.1, reconnect_max_s=0.5, seed=6)
    loop.start()
    clients = make_clients(30, counter)
    try:
        for client in clients:
            loop.connect(client, mosquitto.host, mosquitto.port)
        wait_for(lambda: counter["connects"] == 30, timeout=30, what="every client to connect")
        loop.set_network(False)
        wait_for(lambda: not any(client.is_connected() for client in clients), timeout=30, what="the partition")
        assert counter["connects"] == 30
        loop.set_network(True)
        wait_for(lambda: counter["connects"] == 60, timeout=30, what="every client to reconnect")
    finally:
        for client in clients:
            loop.detach(client)
        loop.stop()
