"""Drives one paho client over a list of brokers: connect, run, and on a drop or a failure fail over.

One thread per client (what a device or a server wants; the simulator's
shared loop drives its own clients and reaches one broker). The thread asks
:class:`fleet_protocol.broker_urls.BrokerFailover` which broker to try and
how long to wait, connects with paho's blocking ``connect``, then runs
``client.loop()`` until the connection ends or :meth:`FailoverThread.stop`.
The link's CONNACK callback calls :meth:`FailoverThread.accepted`, which is
what makes a broker "working" (sticky) rather than failed.

The agent's and the fleet server's links both import it from this shared
package, so both sides fail over the one way. What it does not do: publish, subscribe or
queue anything (the links do; paho keeps QoS 1 messages that are in flight
and sends them again after any reconnect, and the agent's outbox keeps every
record until its PUBACK, whichever node sends it).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt

from fleet_protocol.broker_urls import BrokerFailover, BrokerUrl

log = logging.getLogger("edgefleet.mqtt.failover")


class FailoverThread:
    def __init__(self, client: mqtt.Client, failover: BrokerFailover, *, keepalive_s: int, name: str):
        self._client = client
        self._failover = failover
        self._keepalive_s = keepalive_s
        self._name = name
        self._stop = threading.Event()
        self._accepted = False
        self._thread: threading.Thread | None = None
        self.lost_at: float | None = None  # time.monotonic() when the last working connection ended
        self.reconnect_s: list[float] = []  # per failover: seconds from losing a broker to the next CONNACK

    @property
    def current(self) -> BrokerUrl:
        return self._failover.current

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def accepted(self) -> None:
        """Called from the link's CONNACK callback when the broker accepted the connection."""
        self._accepted = True
        self._failover.connected()
        if self.lost_at is not None:
            self.reconnect_s.append(time.monotonic() - self.lost_at)
            self.lost_at = None

    def stop(self, timeout_s: float, *, then: Callable[[], object] | None = None) -> None:
        """End the thread: no more reconnects from now, ``then()`` (disconnect, or cut the socket), join."""
        self._stop.set()
        if then is not None:
            then()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
        self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            broker = self._failover.current
            self._accepted = False
            try:
                self._client.connect(broker.host, broker.port, keepalive=self._keepalive_s)
            except (OSError, ValueError) as exc:  # refused, unreachable, TLS handshake (ssl.SSLError is an OSError)
                delay = self._failover.failed(random.random())
                log.info("broker %s unreachable (%s); trying %s in %.1fs", broker.url, exc,
                         self._failover.current.url, delay)
                self._stop.wait(delay)
                continue
            rc = mqtt.MQTT_ERR_SUCCESS
            while rc == mqtt.MQTT_ERR_SUCCESS and not self._stop.is_set():
                rc = self._client.loop(timeout=0.5)
            if self._stop.is_set():
                break
            if self._accepted:
                self.lost_at = time.monotonic()
                delay = self._failover.dropped(random.random())
                log.warning("lost broker %s (%s); reconnecting in %.1fs", broker.url, mqtt.error_string(rc), delay)
            else:
                delay = self._failover.failed(random.random())
                log.info("broker %s did not accept the connection; trying %s in %.1fs", broker.url,
                         self._failover.current.url, delay)
            self._stop.wait(delay)
