"""Network fault injection: a TCP proxy whose link can be cut and restored.

:class:`LinkProxy` listens on a loopback port and forwards every accepted
connection to ``target``. Point an agent's ``broker_url`` at the proxy
instead of the broker, then:

* ``cut()`` partitions the link: open connections are reset and new ones are
  accepted and closed at once (the device sees the network as gone);
* ``blackhole()`` partitions it silently: connections stay open but bytes are
  dropped in both directions (the device only notices via keepalive);
* ``restore()`` heals it; new connections are forwarded again.

It does not shape bandwidth, reorder or corrupt bytes; it is a switch. One
thread per direction per connection: fine for a handful of devices in tests,
not for load runs.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field


@dataclass
class _Pair:
    client: socket.socket
    upstream: socket.socket

    def close(self) -> None:
        for sock in (self.client, self.upstream):
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
            except OSError:
                pass
            try:
                sock.close()
            except OSError:
                pass


@dataclass
class LinkProxy:
    """Forward ``127.0.0.1:port`` to ``target``; cut, blackhole and restore the link on demand."""

    target: tuple[str, int]
    host: str = "127.0.0.1"
    port: int = 0  # 0 picks a free port
    _state: str = field(default="up", init=False)  # up | cut | blackhole
    _pairs: list[_Pair] = field(default_factory=list, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    cuts: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self._listener = socket.create_server((self.host, self.port))
        self.port = self._listener.getsockname()[1]
        self._closed = False
        self._thread = threading.Thread(target=self._accept_loop, name=f"link-proxy-{self.port}", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def state(self) -> str:
        return self._state

    def cut(self) -> None:
        """Reset every open connection and refuse new ones until :meth:`restore`."""
        with self._lock:
            self._state, pairs, self._pairs = "cut", self._pairs, []
            self.cuts += 1
        for pair in pairs:
            pair.close()

    def blackhole(self) -> None:
        """Keep connections open but drop every byte in both directions until :meth:`restore`."""
        with self._lock:
            self._state = "blackhole"
            self.cuts += 1

    def restore(self) -> None:
        """Heal the link. Connections that lived through a blackhole are reset (their streams lost bytes)."""
        with self._lock:
            pairs = self._pairs if self._state == "blackhole" else []
            if pairs:
                self._pairs = []
            self._state = "up"
        for pair in pairs:
            pair.close()

    def close(self) -> None:
        self._closed = True
        self.cut()
        try:
            self._listener.close()
        except OSError:
            pass

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._state != "up":
                _Pair(client, socket.socket()).close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _Pair(client, socket.socket()).close()
                continue
            pair = _Pair(client, upstream)
            with self._lock:
                self._pairs.append(pair)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(pair, src, dst), daemon=True).start()

    def _pump(self, pair: _Pair, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if self._state == "up":
                    dst.sendall(data)
        except OSError:
            pass
        with self._lock:
            if pair in self._pairs:
                self._pairs.remove(pair)
        pair.close()
