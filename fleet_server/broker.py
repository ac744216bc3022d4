"""The embedded MQTT broker: amqtt, in-process, on its own asyncio loop in a thread.

Used when no external broker is configured. MQTT 3.1.1, anonymous clients
allowed, listening on ``host:port`` (port 0 picks a free one; see
:attr:`EmbeddedBroker.port`).

Two amqtt 0.12 behaviours are worked around here (both checked by
``tests/server/test_embedded_broker.py``):

* With anonymous access allowed, amqtt marks every session anonymous and
  then drops persistent sessions (clean_session False) a second after they
  disconnect, and never queues QoS 1 messages for them: a client that was
  briefly offline silently lost what was published meanwhile.
  :class:`OpenAuthPlugin` admits everyone without marking them anonymous, so
  persistent sessions behave as MQTT 3.1.1 says (as in Mosquitto); they
  expire after ``session_expiry_s`` offline and hold at most
  ``max_queued_messages`` (Mosquitto's default, 1000; newer ones are
  dropped, as Mosquitto does), so a device that vanished mid-download
  cannot make the broker grow without bound.
* When a persistent session reconnects, amqtt sends it the retained
  messages of *every* topic filter any client subscribed to, not only its
  own: a device would receive other devices' desired states and statuses.
  :class:`_Broker` sends retained messages only for filters the session
  itself holds.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from amqtt.broker import Broker
from amqtt.plugins.base import BaseAuthPlugin

log = logging.getLogger(__name__)
DEFAULT_SESSION_EXPIRY_S = 24 * 3600
MAX_QUEUED_MESSAGES = 1000


class OpenAuthPlugin(BaseAuthPlugin):
    """Admit every client; keep its session like any named client's (see the module docstring)."""

    async def authenticate(self, *, session) -> bool:
        session.is_anonymous = False
        return True


class _Broker(Broker):
    async def _retain_broadcast_message(self, broadcast, qos, target_session) -> None:
        if target_session.retained_messages.qsize() >= MAX_QUEUED_MESSAGES:
            log.debug("queue of offline session %s is full; dropping a message on %s",
                      target_session.client_id, broadcast["topic"])
            return
        await super()._retain_broadcast_message(broadcast, qos, target_session)

    async def _publish_retained_messages_for_subscription(self, subscription, session) -> None:
        topic_filter = subscription[0]
        held = [qos for holder, qos in self._subscriptions.get(topic_filter, [])
                if holder.client_id == session.client_id]
        if held:
            await super()._publish_retained_messages_for_subscription((topic_filter, held[0]), session)


class EmbeddedBroker:
    def __init__(self, *, host: str = "127.0.0.1", port: int = 1883,
                 session_expiry_s: int = DEFAULT_SESSION_EXPIRY_S):
        self.host = host
        self.port = port
        self._session_expiry_s = session_expiry_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broker: _Broker | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{'127.0.0.1' if self.host in ('0.0.0.0', '') else self.host}:{self.port}"

    def start(self, timeout_s: float = 15.0) -> None:
        """Start listening; raise ``OSError`` (e.g. port in use) or ``RuntimeError`` if it cannot."""
        for name in ("amqtt", "transitions"):  # both log every packet and state change at INFO
            if logging.getLogger(name).level == logging.NOTSET:
                logging.getLogger(name).setLevel(logging.WARNING)
        self._thread = threading.Thread(target=self._run, name="edgefleet-broker", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise RuntimeError(f"the embedded MQTT broker did not start within {timeout_s:.0f}s")
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def stop(self, timeout_s: float = 10.0) -> None:
        loop, broker = self._loop, self._broker
        if loop is None or broker is None or not loop.is_running():
            return
        try:
            asyncio.run_coroutine_threadsafe(broker.shutdown(), loop).result(timeout_s)
        except Exception:  # noqa: BLE001 - stopping must not fail the caller
            log.warning("the embedded broker did not shut down cleanly", exc_info=True)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _config(self) -> dict:
        return {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}", "max_connections": 0}},
            "session_expiry_interval": self._session_expiry_s,
            "plugins": {f"{__name__}.OpenAuthPlugin": {}},
        }

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            loop.run_until_complete(self._start())
        except BaseException as exc:  # noqa: BLE001 - handed to the thread that called start()
            self._error = _unwrap(exc)
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _start(self) -> None:
        self._broker = _Broker(self._config())
        await self._broker.start()
        if self.port == 0:
            server = self._broker._servers["default"].instance  # the actual port of a port-0 listener
            self.port = server.sockets[0].getsockname()[1]


def _unwrap(exc: BaseException) -> BaseException:
    """amqtt wraps the listener's OSError (port in use) in BrokerError; return the root cause."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc
