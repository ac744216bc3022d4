"""One thread that drives many paho-mqtt 2.x clients over ``selectors`` (epoll).

paho's ``loop_start()`` gives every client its own thread and ``select()``
call, which stops working at a few hundred clients per process. An
:class:`MqttLoop` instead owns one selector and one thread and uses paho's
external-loop API: ``on_socket_open``/``on_socket_close`` (un)register a
client's socket for reading, ``on_socket_register_write``/
``on_socket_unregister_write`` ask for write readiness while paho has bytes
queued, and the loop calls ``loop_read``/``loop_write`` on readiness and
``loop_misc`` (keepalive pings, dead-connection detection) once per
``misc_interval_s`` for every client, a tenth of the clients per tick.

What it does beyond paho's own loop:

* **Non-blocking connects.** The TCP connect is started with ``connect_ex``
  and finished when the socket becomes writable, so a full accept backlog
  at the broker never stalls the other clients. The connected socket is
  then handed to paho's ``reconnect()``, which sends CONNECT as usual
  (:func:`_hand_over` is the one place that touches paho internals). A TLS
  handshake, when the client has TLS set, is done by paho and blocks the
  loop briefly.
* **Reconnects.** There is no ``loop_start`` thread to reconnect, so after a
  dropped connection, a refused TCP connect or a refused CONNACK the loop
  reconnects after ``min(max, min * 2**attempts)`` seconds times a seeded
  jitter in [0.5, 1.5); the count resets once a CONNACK is accepted.
* **Thread safety.** Anything may be called from any thread: work for the
  loop thread goes through a command queue and a wakeup socketpair
  (``on_socket_register_write`` fires on the publisher's thread).
  Callbacks of the clients (``on_message``, ``on_connect``...) and
  :meth:`MqttLoop.call_soon`/:meth:`MqttLoop.call_later` functions (from
  :class:`~simulators.event_loop.EventLoop`) run on the loop thread and must
  not block.

What it does not do: websockets or proxies, or any MQTT logic of its own;
the clients keep their callbacks, sessions and in-flight messages.
"""

from __future__ import annotations

import errno
import logging
import random
import selectors
import socket
import threading
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt

from .event_loop import EventLoop, TimerHandle, raise_fd_limit

__all__ = ["MqttLoop", "TimerHandle", "raise_fd_limit"]

log = logging.getLogger("edgefleet.simulators.mqtt_loop")

_TICKS_PER_ROUND = 10  # loop_misc visits 1/10 of the clients per tick


@dataclass(eq=False)
class _Entry:
    client: mqtt.Client
    addr: tuple[int, tuple]  # (address family, socket address)
    keepalive: int
    backoff: tuple[float, float]  # (min, max) seconds between reconnect attempts
    sock: object | None = None  # paho's socket while open
    writing: bool = False  # registered for EVENT_WRITE
    connecting: socket.socket | None = None  # TCP connect in progress
    attempts: int = 0
    timer: TimerHandle | None = None
    detached: bool = False
    waiters: list[threading.Event] = field(default_factory=list)


class MqttLoop(EventLoop):
    """Drive many paho clients from one thread; see the module docstring."""

    def __init__(self, name: str = "mqtt-loop", *, reconnect_min_s: float = 1.0, reconnect_max_s: float = 30.0,
                 connect_timeout_s: float = 10.0, misc_interval_s: float = 1.0, seed: int | None = None):
        super().__init__(name)
        self._backoff = (reconnect_min_s, reconnect_max_s)
        self._connect_timeout_s = connect_timeout_s
        self._tick_s = misc_interval_s / _TICKS_PER_ROUND
        self._random = random.Random(seed)
        self._entries: dict[mqtt.Client, _Entry] = {}
        self._misc_round: list[_Entry] = []
        self._misc_pos = 0
        self._network_up = True

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Raise the open-file limit and start the loop thread (``stop()`` closes what is left, no DISCONNECT)."""
        if self._thread is None:
            super().start()
            self.call_later(self._tick_s, self._misc_tick)

    @property
    def clients(self) -> int:
        """Number of attached clients (connected or not)."""
        return len(self._entries)

    def set_network(self, up: bool) -> None:
        """Partition (``False``) or heal (``True``) every client's network (thread-safe).

        While partitioned, open connections are cut and new TCP connects fail at
        once, so clients back off as they would on a dead link.
        """
        self.call_soon(lambda: self._set_network(up))

    def _set_network(self, up: bool) -> None:
        self._network_up = up
        if up:
            return
        for entry in self._entries.values():
            if entry.connecting is not None:
                entry.timer.cancel()
                entry.timer = None
                self._abandon_connect(entry)
            if entry.sock is not None:
                try:
                    entry.sock.shutdown(socket.SHUT_RDWR)  # paho reads EOF, closes, and the loop backs off
                except OSError:
                    pass
            elif entry.timer is None and not entry.detached:
                self._schedule_reconnect(entry)

    # --- clients --------------------------------------------------------------------------------

    def connect(self, client: mqtt.Client, host: str, port: int, keepalive: int = 60, *,
                reconnect_min_s: float | None = None, reconnect_max_s: float | None = None) -> None:
        """Attach ``client`` and connect it in the background (thread-safe; returns at once).

        The loop keeps it connected (reconnecting with backoff) until :meth:`detach`.
        Resolves ``host`` here, on the caller's thread. Raises ``OSError`` if it cannot be resolved.
        """
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        client.connect_async(host, port, keepalive=keepalive)  # only records host, port and keepalive
        backoff = (reconnect_min_s if reconnect_min_s is not None else self._backoff[0],
                   reconnect_max_s if reconnect_max_s is not None else self._backoff[1])
        entry = _Entry(client, (family, address), keepalive, backoff)
        self.call_soon(lambda: self._attach(entry))

    def detach(self, client: mqtt.Client, *, clean: bool = True) -> threading.Event:
        """Stop managing ``client`` (thread-safe); the returned event is set once its socket is closed.

        ``clean``: flush queued packets and send DISCONNECT (no last will); otherwise
        the connection is just closed, as a crashed device's would be (the broker
        publishes the last will).
        """
        done = threading.Event()
        self.call_soon(lambda: self._detach(client, clean, done))
        return done

    # --- the loop thread ------------------------------------------------------------------------

    def _dispatch(self, key: selectors.SelectorKey, mask: int) -> None:
        entry = key.data
        if key.fileobj is entry.connecting:
            self._finish_connect(entry)
        elif key.fileobj is entry.sock:
            self._service(entry, mask)

    def _on_exit(self) -> None:
        for entry in list(self._entries.values()):
            self._drop(entry)
        self._entries.clear()

    def _service(self, entry: _Entry, mask: int) -> None:
        client = entry.client
        try:
            if mask & selectors.EVENT_READ:
                client.loop_read()
                if entry.attempts and client.is_connected():
                    entry.attempts = 0  # a CONNACK was accepted
            if entry.sock is not None and (mask & selectors.EVENT_WRITE or client.want_write()):
                client.loop_write()
        except Exception:  # noqa: BLE001 - an exception from a client callback
            log.exception("%s: client %s failed", self.name, client._client_id)
        self._sync_write(entry)

    def _sync_write(self, entry: _Entry) -> None:
        """Register for write readiness exactly while paho has bytes queued."""
        if entry.sock is None:
            return
        want = entry.client.want_write()
        if want != entry.writing:
            entry.writing = want
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if want else 0)
            self._selector.modify(entry.sock, events, entry)

    def _misc_tick(self) -> None:
        if self._misc_pos >= len(self._misc_round):
            self._misc_round = list(self._entries.values())
            self._misc_pos = 0
        end = self._misc_pos + -(-len(self._misc_round) // _TICKS_PER_ROUND)
        for entry in self._misc_round[self._misc_pos:end]:
            if entry.sock is not None and not entry.detached:
                try:
                    entry.client.loop_misc()
                except Exception:  # noqa: BLE001
                    log.exception("%s: loop_misc failed", self.name)
                self._sync_write(entry)
        self._misc_pos = end
        if self._running:
            self.call_later(self._tick_s, self._misc_tick)

    # --- connecting -----------------------------------------------------------------------------

    def _attach(self, entry: _Entry) -> None:
        client = entry.client
        if client in self._entries:
            return
        self._entries[client] = entry
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        self._start_connect(entry)

    def _start_connect(self, entry: _Entry) -> None:
        entry.timer = None
        if entry.detached or entry.sock is not None or entry.connecting is not None or not self._running:
            return
        if not self._network_up:
            self._schedule_reconnect(entry)
            return
        family, address = entry.addr
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:  # out of file descriptors
            log.warning("%s: cannot open a socket: %s", self.name, exc)
            self._schedule_reconnect(entry)
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = sock.connect_ex(address)
        if err == 0:
            self._hand_over(entry, sock)
        elif err in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
            entry.connecting = sock
            self._selector.register(sock, selectors.EVENT_WRITE, entry)
            entry.timer = self.call_later(self._connect_timeout_s, lambda: self._connect_timed_out(entry, sock))
        else:
            sock.close()
            self._schedule_reconnect(entry)

    def _connect_timed_out(self, entry: _Entry, sock: socket.socket) -> None:
        if entry.connecting is sock:
            self._abandon_connect(entry)
            self._schedule_reconnect(entry)

    def _abandon_connect(self, entry: _Entry) -> None:
        sock, entry.connecting = entry.connecting, None
        if sock is not None:
            self._selector.unregister(sock)
            sock.close()

    def _finish_connect(self, entry: _Entry) -> None:
        sock, entry.connecting = entry.connecting, None
        self._selector.unregister(sock)
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            sock.close()
            self._schedule_reconnect(entry)
        else:
            self._hand_over(entry, sock)

    def _hand_over(self, entry: _Entry, sock: socket.socket) -> None:
        """Give a connected TCP socket to paho's ``reconnect()``, which sends CONNECT.

        paho 2.x has no public way to adopt a socket: ``reconnect()`` calls
        ``self._create_socket()``, which is shadowed on the instance for that one call.
        """
        client = entry.client
        try:
            if client._ssl:
                sock.setblocking(True)
                sock = client._ssl_wrap_socket(sock)  # blocking handshake with paho's connect timeout
            client._create_socket = lambda: sock
            try:
                client.reconnect()
            finally:
                del client._create_socket
        except Exception as exc:  # noqa: BLE001 - TLS or socket errors, or a failing on_pre_connect
            log.debug("%s: handing over a connection failed: %r", self.name, exc)
            if entry.sock is not None:
                self._selector.unregister(entry.sock)
                entry.sock = None
            sock.close()
            self._schedule_reconnect(entry)
            return
        self._sync_write(entry)

    def _schedule_reconnect(self, entry: _Entry) -> None:
        if entry.detached or not self._running:
            return
        low, high = entry.backoff
        delay = min(high, low * 2 ** min(entry.attempts, 30)) * (0.5 + self._random.random())
        entry.attempts += 1
        entry.timer = self.call_later(delay, lambda: self._start_connect(entry))

    # --- paho's socket callbacks ----------------------------------------------------------------

    def _on_socket_open(self, client: mqtt.Client, userdata, sock) -> None:
        entry = self._entries.get(client)
        if entry is not None:
            entry.sock, entry.writing = sock, False
            self._selector.register(sock, selectors.EVENT_READ, entry)

    def _on_socket_close(self, client: mqtt.Client, userdata, sock) -> None:
        if not self.in_loop_thread():
            self.call_soon(lambda: self._on_socket_close(client, userdata, sock))
            return
        entry = self._entries.get(client)
        if entry is None or entry.sock is not sock:
            return
        self._selector.unregister(sock)
        entry.sock, entry.writing = None, False
        self._schedule_reconnect(entry)  # not when being detached

    def _on_register_write(self, client: mqtt.Client, userdata, sock) -> None:
        if self.in_loop_thread():
            entry = self._entries.get(client)
            if entry is not None and entry.sock is sock and not entry.writing:
                entry.writing = True
                self._selector.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, entry)
        else:  # a publish on another thread
            self.call_soon(lambda: self._on_register_write(client, userdata, sock))

    def _on_unregister_write(self, client: mqtt.Client, userdata, sock) -> None:
        if self.in_loop_thread():
            entry = self._entries.get(client)
            if entry is not None and entry.sock is sock:
                self._sync_write(entry)  # paho's flag can race with a publish on another thread

    # --- detaching ------------------------------------------------------------------------------

    def _detach(self, client: mqtt.Client, clean: bool, done: threading.Event) -> None:
        entry = self._entries.get(client)
        if entry is None:
            done.set()
            return
        entry.detached = True  # no reconnect when the socket closes below
        entry.waiters.append(done)
        if clean and entry.sock is not None:
            try:
                if client.want_write():
                    client.loop_write()  # e.g. a DISCONNECT the owner queued
                if entry.sock is not None and client.is_connected():
                    client.disconnect()
                    client.loop_write()
            except Exception:  # noqa: BLE001
                log.exception("%s: clean disconnect failed", self.name)
        self._drop(entry)

    def _drop(self, entry: _Entry) -> None:
        """Close whatever socket is left (paho sees a lost connection), forget the client, wake waiters."""
        entry.detached = True
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None
        self._abandon_connect(entry)
        sock = entry.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            for _ in range(64):  # read what is buffered up to the EOF: paho then closes the socket
                try:
                    entry.client.loop_read()
                except Exception:  # noqa: BLE001
                    log.exception("%s: closing a connection failed", self.name)
                    break
                if entry.sock is None:
                    break
            if entry.sock is not None:  # paho did not close it
                self._selector.unregister(sock)
                entry.sock = None
                sock.close()
        client = entry.client
        for name in ("on_socket_open", "on_socket_close", "on_socket_register_write", "on_socket_unregister_write"):
            setattr(client, name, None)
        self._entries.pop(client, None)
        for event in entry.waiters:
            event.set()
