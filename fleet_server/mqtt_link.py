"""The server's one MQTT connection (paho-mqtt 2.x, MQTT 3.1.1).

Client id ``edgefleet-server`` (``edgefleet-server-<replica id>`` when
several replicas share the broker: :attr:`ServerConfig.mqtt_client_id`) with a
persistent session (clean_session False), QoS 1 subscriptions to the given
topic filters (:func:`fleet_protocol.topics.server_subscriptions`: plain, or
``$share/edgefleet/...`` so the broker hands each device message to one
replica), automatic reconnects: to one broker, or failing over between the
nodes of a cluster when ``broker_url`` lists several (``URL,URL,...``:
random start, sticky, full-jitter back-off, the agent's
:class:`edgefleet_runtime.mqtt_failover.FailoverThread`); mutual TLS when given ``tls`` (CA certificate, client
certificate, client key: the files ``edgefleet server broker-config`` wrote). Every incoming message goes to one ``on_message``
callback; an exception there is logged and never stops the network thread.
The link counts as connected only once the broker acknowledged its subscriptions
(SUBACK): a clustered broker (NATS) may take a second or more to set up a persistent
session's subscriptions, and a device message published before that reaches no one.
``on_connected`` runs after every (re)connect and SUBACK, which is where
the server republishes desired state; :attr:`MqttLink.connected_for_s` says
how long ago that was (the job controller waits a while after it before it
judges timeouts). Publishing while disconnected is
refused (returns False) rather than queued: whatever must reach devices is
in the database and is published again on reconnect.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt

from edgefleet_runtime.mqtt_failover import FailoverThread
from fleet_protocol import topics
from fleet_protocol.broker_urls import BrokerFailover, parse_broker_urls

log = logging.getLogger(__name__)
CLIENT_ID = "edgefleet-server"


class MqttLink:
    def __init__(self, broker_url: str, *, on_message: Callable[[str, bytes, bool], None],
                 on_connected: Callable[[], None], client_id: str = CLIENT_ID, keepalive_s: int = 30,
                 tls: tuple[Path, Path, Path] | None = None,
                 subscriptions: tuple[str, ...] = topics.SERVER_SUBSCRIPTIONS):
        brokers = parse_broker_urls([broker_url])
        self._failover = BrokerFailover(brokers, order=random.sample(range(len(brokers)), len(brokers)))
        self._on_message = on_message
        self._on_connected = on_connected
        self.client_id = client_id
        self.subscriptions = subscriptions
        self._keepalive_s = keepalive_s
        self._connected = threading.Event()
        self._connected_at = 0.0  # time.monotonic() of the last (re)connect
        self.connects = 0  # successful connections so far: more than one means it reconnected (the metrics)
        self._stopping = False
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False,
                                   protocol=mqtt.MQTTv311)
        if tls is not None:
            ca_cert, cert, key = tls
            self._client.tls_set(ca_certs=str(ca_cert), certfile=str(cert), keyfile=str(key))
        self._client.max_inflight_messages_set(100)
        self._client.on_connect = self._handle_connect
        self._client.on_disconnect = self._handle_disconnect
        self._client.on_message = self._handle_message
        self._client.on_subscribe = self._handle_subscribe
        self._subscribe_mid: int | None = None
        self._runner = FailoverThread(self._client, self._failover, keepalive_s=keepalive_s, name=f"mqtt-{client_id}")

    @property
    def broker_url(self) -> str:
        """The broker node connected to, or tried next."""
        return self._failover.current.url

    @property
    def reconnect_s(self) -> list[float]:
        """Seconds from each lost broker connection to the next accepted one."""
        return list(self._runner.reconnect_s)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def connected_for_s(self) -> float | None:
        """Seconds since the link last (re)connected; None while it is down."""
        return time.monotonic() - self._connected_at if self._connected.is_set() else None

    def start(self) -> None:
        self._runner.start()

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> bool:
        if not self._connected.is_set():
            return False
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    def stop(self) -> None:
        self._stopping = True
        self._runner.stop(5.0, then=self._client.disconnect)
        self._connected.clear()

    def _handle_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("the broker at %s refused the connection: %s", self.broker_url, reason_code)
            return
        self._runner.accepted()
        _, self._subscribe_mid = client.subscribe([(topic_filter, 1) for topic_filter in self.subscriptions])
        log.info("connected to the broker at %s; subscribing", self.broker_url)

    def _handle_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        if mid != self._subscribe_mid:
            return
        refused = [f for f, rc in zip(self.subscriptions, reason_codes) if getattr(rc, "is_failure", False)]
        if refused:
            log.error("the broker at %s refused the subscription(s) %s: no message on them reaches this server",
                      self.broker_url, ", ".join(refused))
        self.connects += 1
        self._connected_at = time.monotonic()
        self._connected.set()
        log.info("subscribed at the broker at %s", self.broker_url)
        try:
            self._on_connected()
        except Exception:  # noqa: BLE001 - never let a callback kill the network thread
            log.exception("after connecting to the broker")

    def _handle_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self._connected.is_set() and not self._stopping:
            log.warning("lost the broker at %s (%s); reconnecting", self.broker_url, reason_code)
        self._connected.clear()

    def _handle_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:
        try:
            self._on_message(message.topic, message.payload, bool(message.retain))
        except Exception:  # noqa: BLE001 - never let a handler kill the network thread
            log.exception("handling a message on %s", message.topic)
