"""A bare paho client standing in for a device in the server's MQTT tests."""

from __future__ import annotations

import threading
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt

from tests.support.net import wait_for


class FakeDevice:
    def __init__(self, broker_url: str, client_id: str, *, clean_session: bool = True):
        parts = urlsplit(broker_url)
        self.received: list[mqtt.MQTTMessage] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=clean_session, protocol=mqtt.MQTTv311)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.connect(parts.hostname, parts.port)
        self.client.loop_start()

    def _on_message(self, client, userdata, message) -> None:
        with self._lock:
            self.received.append(message)

    def subscribe(self, topic: str) -> None:
        self._subscribed.clear()
        self.client.subscribe(topic, qos=1)
        assert self._subscribed.wait(10), f"no SUBACK for {topic}"

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def messages(self, topic: str) -> list[mqtt.MQTTMessage]:
        with self._lock:
            return [m for m in self.received if m.topic == topic]

    def wait_message(self, topic: str, *, count: int = 1, timeout: float = 20.0) -> list[mqtt.MQTTMessage]:
        return wait_for(lambda: len(self.messages(topic)) >= count and self.messages(topic), timeout=timeout,
                        what=f"{count} message(s) on {topic}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
