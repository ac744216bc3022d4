"""The agent's one MQTT connection (paho-mqtt 2.x, MQTT 3.1.1), behind a small interface.

What it does: connects with a stable client id and a persistent session
(``clean_session=False``), over TLS exactly when ``tls`` (the broker URL is
``mqtts://``; the client certificate in ``tls_files`` is presented only
then: an enrolled device on a plain ``mqtt://`` broker connects without it
and says so), to one broker (``host``, ``port``) or to the nodes of a
cluster (``brokers``: random start, sticky, failover with full-jitter
back-off, :mod:`fleet_protocol.broker_urls` and :mod:`edgefleet_runtime.mqtt_failover`), sets the
retained ``offline`` last will, re-subscribes and calls the agent's
``on_connect`` hook on every connect, routes each incoming message to the
handler registered for its topic, and reports PUBACKs to a listener.

Who drives the socket: by default one :class:`~edgefleet_runtime.mqtt_failover.FailoverThread`
per link, which is what a device wants.
Given a ``loop`` (a :class:`LoopLike` such as
:class:`simulators.mqtt_loop.MqttLoop`, which drives thousands of clients
from one thread), :meth:`MqttLink.start` attaches the client to it instead
and :meth:`MqttLink.stop` detaches it; the loop then reconnects (to the one broker
picked at random from ``brokers``: the shared loop does not fail over), and the
``on_connect`` hook runs on the loop's thread (so it must not block there).
An optional ``inbound`` filter sees every incoming message before its
handler and may deliver it later or never (the simulator's faults).

What it does not do: parse payloads (handlers do, with the fleet_protocol
parsers) or retry publishes (the outbox does). paho errors are converted at
this boundary into :class:`~fleet_protocol.errors.TransportError`; a handler
that raises is logged and never reaches paho's thread.

Two helpers for floods of bad input sit beside it: :class:`RateLimitedLog`
(one log line per key and interval) and :class:`RefusalCount` (messages
refused by a trust check, counted for the telemetry, never one record each).
"""

from __future__ import annotations

import logging
import random
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Callable, Protocol

import paho.mqtt.client as mqtt

from fleet_protocol.broker_urls import BrokerFailover, BrokerUrl
from fleet_protocol.errors import TransportError
from fleet_protocol.retry import RetryPolicy

from edgefleet_runtime.mqtt_failover import FailoverThread

log = logging.getLogger("edgefleet.agent.mqtt")

Handler = Callable[[str, bytes], None]
# Sees each incoming message first and calls deliver() to pass it on: now, later or never (fault injection).
Inbound = Callable[[str, bytes, Callable[[], None]], None]


class LoopLike(Protocol):
    """What :class:`MqttLink` needs from a shared event loop (see :mod:`simulators.mqtt_loop`)."""

    def connect(self, client: mqtt.Client, host: str, port: int, keepalive: int = 60, *,
                reconnect_min_s: float | None = None, reconnect_max_s: float | None = None) -> None: ...

    def detach(self, client: mqtt.Client, *, clean: bool = True) -> threading.Event: ...

    def call_soon(self, fn: Callable[[], object]) -> None: ...


class MqttLink:
    def __init__(self, *, client_id: str, host: str | None = None, port: int | None = None,
                 brokers: tuple[BrokerUrl, ...] = (), tls: bool = False,
                 tls_files: tuple[Path, Path, Path] | None = None, keepalive_s: int = 30,
                 will: tuple[str, bytes] | None = None, on_connect: Callable[[], None] | None = None,
                 on_puback: Callable[[int], None] | None = None,
                 reconnect_min_s: float = 1.0, reconnect_max_s: float = 30.0, loop: LoopLike | None = None,
                 inbound: Inbound | None = None):
        if not brokers:
            if host is None or port is None:
                raise ValueError("an MQTT link needs host and port, or brokers")
            brokers = (BrokerUrl(f"{'mqtts' if tls else 'mqtt'}://{host}:{port}", host, port, tls),)
        self._failover = BrokerFailover(brokers, order=random.sample(range(len(brokers)), len(brokers)),
                                        policy=RetryPolicy(base_delay_s=reconnect_min_s, max_delay_s=reconnect_max_s))
        self._runner: FailoverThread | None = None
        self._client_id = client_id
        self._inbound = inbound
        self._loop = loop
        self._backoff = (reconnect_min_s, reconnect_max_s)
        self._keepalive = keepalive_s
        self._on_connect_hook = on_connect
        self._on_puback = on_puback
        self._handlers: dict[str, Handler] = {}  # exact topic -> handler
        self._subscriptions: dict[str, int] = {}  # topic -> qos, restored on every connect
        self._suback: dict[int, threading.Event] = {}
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._started = False
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False,
                             protocol=mqtt.MQTTv311)
        client.max_inflight_messages_set(64)
        self._tls_context: ssl.SSLContext | None = None
        if tls_files is not None and not tls:
            log.warning("the broker URL is mqtt:// (no TLS): connecting without the device certificate; give the "
                        "agent the broker's mqtts:// URL for mutual TLS")
        elif tls_files is not None:  # mutual TLS: (CA certificate, client certificate, client key)
            self._tls_context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls_files[0]))
            self._tls_context.load_cert_chain(str(tls_files[1]), str(tls_files[2]))
            client.tls_set_context(self._tls_context)
        elif tls:
            client.tls_set()
        if will is not None:
            client.will_set(will[0], will[1], qos=1, retain=True)
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_message = self._handle_message
        client.on_subscribe = self._handle_subscribe
        client.on_publish = self._handle_publish
        self._client = client

    def reload_client_certificate(self, cert: Path, key: Path) -> None:
        """Present a renewed client certificate from the next (re)connect on; the open connection keeps the old."""
        if self._tls_context is None:
            raise TransportError("this link does not use a client certificate")
        self._tls_context.load_cert_chain(str(cert), str(key))

    @property
    def host(self) -> str:
        """The broker connected to, or tried next."""
        return self._failover.current.host

    @property
    def port(self) -> int:
        return self._failover.current.port

    @property
    def broker_url(self) -> str:
        return self._failover.current.url

    @property
    def reconnect_s(self) -> list[float]:
        """Seconds from each lost broker connection to the next accepted one (this link's own thread only)."""
        return list(self._runner.reconnect_s) if self._runner is not None else []

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start connecting in the background (own thread, or attached to the loop); returns at once."""
        try:
            if self._loop is not None:
                self._loop.connect(self._client, self.host, self.port, self._keepalive,
                                   reconnect_min_s=self._backoff[0], reconnect_max_s=self._backoff[1])
            else:
                self._runner = self._runner or FailoverThread(self._client, self._failover, keepalive_s=self._keepalive,
                                                              name=f"mqtt-{self._client_id}")
                self._runner.start()
        except (OSError, ValueError) as exc:
            raise TransportError(f"cannot connect to the broker at {self.host}:{self.port}: {exc}") from None
        self._started = True

    def stop(self, *, last: tuple[str, bytes] | None = None, timeout_s: float = 3.0, abrupt: bool = False) -> None:
        """Publish ``last`` (the offline status) if connected, then disconnect and stop (or detach from the loop).

        ``abrupt``: close the connection without DISCONNECT and without ``last``, as a
        crash would (the broker then publishes the last will). Not on the loop's thread.
        """
        if not self._started:
            return
        if abrupt:
            self._stop_abruptly(timeout_s)
            return
        if last is not None and self.connected:
            try:
                info = self._client.publish(last[0], last[1], qos=1, retain=True)
                info.wait_for_publish(timeout_s)
            except (RuntimeError, ValueError, OSError) as exc:
                log.info("could not publish the offline status: %s", exc)
        self._connected.clear()  # a disconnect asked for, not a drop to warn about
        try:
            if self._runner is not None:
                self._runner.stop(timeout_s, then=self._client.disconnect)
            else:
                self._client.disconnect()
        finally:
            if self._loop is not None:
                self._loop.detach(self._client).wait(timeout_s)
            self._started = False
            self._connected.clear()

    def _stop_abruptly(self, timeout_s: float) -> None:
        if self._loop is not None:
            self._loop.detach(self._client, clean=False).wait(timeout_s)
        elif self._runner is not None:
            self._runner.stop(timeout_s, then=self.drop_connection)
        self._started = False
        self._connected.clear()

    def drop_connection(self) -> None:
        """Cut the open connection at once (no DISCONNECT, no pending acknowledgements); it reconnects as after any drop."""
        sock = self._client.socket()
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)

    # --- operations -----------------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> int | None:
        """Send now if connected and return the message id; None when offline (nothing is queued)."""
        if not self.connected:
            return None
        try:
            info = self._client.publish(topic, payload, qos=qos, retain=retain)
        except (ValueError, OSError) as exc:
            raise TransportError(f"publish on {topic} failed: {exc}") from None
        if info.rc == mqtt.MQTT_ERR_NO_CONN:
            return info.mid  # queued by paho for the reconnect; the PUBACK still reports it
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise TransportError(f"publish on {topic} failed: {mqtt.error_string(info.rc)}")
        return info.mid

    def route(self, topic: str, handler: Handler) -> None:
        """Deliver messages on ``topic`` (exact name) to ``handler(topic, payload)``."""
        with self._lock:
            self._handlers[topic] = handler

    def subscribe(self, topic: str, handler: Handler, *, qos: int = 1, timeout_s: float = 10.0,
                  wait: bool = True) -> None:
        """Subscribe (now and on every reconnect) and wait for the SUBACK.

        Raises :class:`TransportError` if offline or refused. With ``wait=False``
        the subscription is only recorded, and made on the next connect.
        """
        with self._lock:
            self._handlers[topic] = handler
            self._subscriptions[topic] = qos
        if not wait:
            return
        if not self.connected:
            raise TransportError(f"not connected to the broker; cannot subscribe to {topic}")
        event = threading.Event()
        try:
            with self._lock:  # the SUBACK may come back before subscribe() returns the mid
                rc, mid = self._client.subscribe(topic, qos)
                if rc == mqtt.MQTT_ERR_SUCCESS:
                    self._suback[mid] = event
        except (ValueError, OSError) as exc:
            raise TransportError(f"subscribe to {topic} failed: {exc}") from None
        if rc != mqtt.MQTT_ERR_SUCCESS:
            raise TransportError(f"subscribe to {topic} failed: {mqtt.error_string(rc)}")
        if not event.wait(timeout_s):
            with self._lock:
                self._suback.pop(mid, None)
            raise TransportError(f"no SUBACK for {topic} within {timeout_s:g}s")

    def resubscribe(self, topic: str) -> None:
        """Subscribe again now without waiting (safe on paho's thread): the broker re-sends its retained message."""
        with self._lock:
            qos = self._subscriptions.get(topic)
        if qos is None or not self.connected:
            return  # not subscribed, or the next connect subscribes (and gets the retained message) anyway
        try:
            self._client.subscribe(topic, qos)
        except (ValueError, OSError) as exc:
            log.info("subscribing again to %s failed: %s", topic, exc)

    def unsubscribe(self, topic: str) -> None:
        with self._lock:
            self._handlers.pop(topic, None)
            self._subscriptions.pop(topic, None)
        if self.connected:
            try:
                self._client.unsubscribe(topic)
            except (ValueError, OSError) as exc:
                log.debug("unsubscribe from %s failed: %s", topic, exc)

    # --- paho callbacks (paho's thread) ---------------------------------------------------------

    def _handle_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("broker refused the connection: %s", reason_code)
            return
        if self._runner is not None:
            self._runner.accepted()
        log.info("connected to the broker at %s:%s (session present: %s)", self.host, self.port,
                 getattr(flags, "session_present", None))
        with self._lock:
            subscriptions = list(self._subscriptions.items())
        for topic, qos in subscriptions:
            client.subscribe(topic, qos)
        self._connected.set()
        if self._on_connect_hook is None:
            return
        if self._loop is not None:  # after this callback returns, on the loop's thread
            self._loop.call_soon(self._run_hook)
        else:  # outside paho's thread: the hook publishes and may wait for acknowledgements
            threading.Thread(target=self._run_hook, name="mqtt-on-connect", daemon=True).start()

    def _run_hook(self) -> None:
        try:
            self._on_connect_hook()
        except Exception:  # noqa: BLE001 - a hook must not kill the link
            log.exception("on-connect hook failed")

    def _handle_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        if was:
            log.warning("disconnected from the broker (%s); reconnecting with backoff", reason_code)

    def _handle_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        with self._lock:
            event = self._suback.pop(mid, None)
        if event is not None:
            if any(getattr(rc, "is_failure", False) for rc in reason_codes):
                log.warning("broker refused a subscription (mid %s)", mid)
            else:
                event.set()

    def _handle_publish(self, client, userdata, mid, reason_code, properties) -> None:
        if self._on_puback is not None:
            try:
                self._on_puback(mid)
            except Exception:  # noqa: BLE001
                log.exception("PUBACK listener failed")

    def _handle_message(self, client, userdata, message) -> None:
        topic, payload = message.topic, message.payload
        if self._inbound is not None:
            try:
                self._inbound(topic, payload, lambda: self._deliver(topic, payload))
            except Exception:  # noqa: BLE001
                log.exception("inbound filter failed on %s", topic)
        else:
            self._deliver(topic, payload)

    def _deliver(self, topic: str, payload: bytes) -> None:
        handler = self._handlers.get(topic)
        if handler is None:
            return  # e.g. a chunk of a bundle we stopped fetching
        try:
            handler(topic, payload)
        except Exception:  # noqa: BLE001 - never let a payload crash the link
            log.exception("handler for %s failed", topic)


class RateLimitedLog:
    """Log at most once per key per ``interval_s`` (malformed payloads arrive in floods)."""

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0):
        self._log = logger
        self._interval = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, message: str, *args) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        self._last[key] = now
        suppressed = self._suppressed.pop(key, 0)
        suffix = f" ({suppressed} similar suppressed)" if suppressed else ""
        self._log.warning(message + suffix, *args)


class RefusalCount:
    """Counts messages refused by a trust check (signature, device, version), per topic kind and error code.

    Refusals can arrive in floods, so each is counted rather than written as its own record;
    :meth:`take_records` gives the telemetry one ``refused_messages`` event per heartbeat with the
    count since the last one and the running total. Thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.total = 0
        self.by_code: dict[str, int] = {}  # "desired/bad_signature" -> count since start
        self._new: dict[str, int] = {}

    def add(self, kind: str, code: str) -> None:
        key = f"{kind}/{code}"
        with self._lock:
            self.total += 1
            self.by_code[key] = self.by_code.get(key, 0) + 1
            self._new[key] = self._new.get(key, 0) + 1

    def take_records(self) -> list[tuple[str, dict]]:
        with self._lock:
            new, self._new = self._new, {}
            total = self.total
        if not new:
            return []
        return [("event", {"event": "refused_messages", "count": sum(new.values()), "total": total, "codes": new})]
