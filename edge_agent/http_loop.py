"""A one-thread HTTP/1.1 server: the transport of the agent's local scoring endpoint (:mod:`edge_agent.scoring_api`).

One thread owns every socket through a ``selectors`` loop (epoll on Linux):
it accepts, reads whatever has arrived, parses the heads with
:class:`~edge_agent.http_head.HeadParser`, calls the handler once per whole
request, in order, and writes the answers. The handler runs on this thread
(onnxruntime releases the GIL inside ``Session.run``, but there is no other
request thread to hand it to: see docs/tail-latency.md for why that wins
here), so it must not block on anything but the model.

HTTP it speaks: keep-alive (HTTP/1.1 by default, HTTP/1.0 with
``Connection: keep-alive``), pipelining (answers in request order), bodies
framed by ``Content-Length`` only, ``Expect: 100-continue`` (a ``100
Continue`` while the body is still to come), ``HEAD``. Every answer carries
a Content-Length and goes out in one ``send`` with the others ready at the
same time. A head the parser refuses is answered (``{"error": ...}``,
``Connection: close``) and the connection closed.

Slow and hostile clients: a request's head must arrive whole within
``timeout_s`` of its first byte (slowloris), its body must not stall for
``timeout_s``, an idle keep-alive connection and a client that does not read
its answers are closed after ``timeout_s``; a client that pipelines without
reading is not read from again until its answers have left (no unbounded
buffers). Deadlines are checked every 0.25 s.

It knows no routes (the handler's) and does no TLS (loopback by default).
"""

from __future__ import annotations

import collections
import email.utils
import json
import logging
import selectors
import socket
import threading
import time
from http import HTTPStatus
from typing import Callable

from .http_head import HeadError, HeadParser, Request

log = logging.getLogger("edgefleet.agent.scoring")

_READ_BYTES = 65_536  # one recv (a 256 KiB one costs ~30 µs more: glibc maps and unmaps a buffer that size)
_FLUSH_AT = 262_144  # answers pending on a connection before it sends them and reads no more until they leave
_TICK_S = 0.25  # how often deadlines are checked
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_READ, _WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
_WAKE = object()


class Response:
    """What a handler answers: ``body`` bytes of ``content_type``; ``close`` ends the connection after it."""

    __slots__ = ("status", "body", "content_type", "headers", "close")

    def __init__(self, status: int, body: bytes, content_type: str = "application/json",
                 headers: dict[str, str] | None = None, close: bool = False):
        self.status, self.body, self.content_type, self.headers, self.close = status, body, content_type, headers, close


def error_response(status: int, message: str, headers: dict[str, str] | None = None, close: bool = False) -> Response:
    """``{"error": message}`` with ``status``."""
    return Response(status, json.dumps({"error": message}, separators=(",", ":")).encode(), headers=headers,
                    close=close)


class _Connection:
    __slots__ = ("sock", "peer", "parser", "buffer", "request", "out", "pending", "deadline", "eof", "closing",
                 "writing")

    def __init__(self, sock: socket.socket, peer: str, parser: HeadParser, deadline: float):
        self.sock, self.peer, self.parser, self.deadline = sock, peer, parser, deadline
        self.buffer = bytearray()  # bytes received and not yet consumed by a request
        self.request: Request | None = None  # a request whose head is read and whose body is still arriving
        self.out: list[bytes] = []  # answers not yet sent
        self.pending = 0  # their bytes
        self.eof = self.closing = self.writing = False


class HttpLoopServer:
    """Bound on construction (OSError for a port in use); serves from :meth:`start` until :meth:`stop`.

    ``threads`` loops, each owning the connections handed to it (round robin, by the first loop, which
    accepts); one loop serves one connection from its first request to its last.
    """

    def __init__(self, address: tuple[str, int], handler: Callable[[Request], Response], *, max_body_bytes: int,
                 timeout_s: float, server_name: str, threads: int = 1):
        host, port = address
        self.socket = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET,
                                           backlog=128)  # the listening socket (socketserver's name for it)
        self.socket.setblocking(False)
        self._loops = [_Loop(handler, max_body_bytes=max_body_bytes, timeout_s=timeout_s, server_name=server_name)
                       for _ in range(max(1, threads))]
        self._loops[0].listen(self.socket, self._hand_out)
        self._turn = 0

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.socket.getsockname()[:2]
        return str(host), int(port)

    @property
    def _thread(self) -> threading.Thread | None:
        """The first loop's thread (it accepts: while it runs, the server serves)."""
        return self._loops[0].thread

    def start(self) -> None:
        for index, loop in enumerate(self._loops):
            loop.start(f"scoring-http-{index}" if index else "scoring-http")

    def stop(self) -> None:
        """Close the listener and every connection (answers not yet sent are dropped)."""
        for loop in self._loops:
            loop.stop()
        self.socket.close()

    def _hand_out(self, sock: socket.socket, peer: str) -> None:
        loop = self._loops[self._turn]
        self._turn = (self._turn + 1) % len(self._loops)
        loop.adopt(sock, peer)


class _Loop:
    """One thread, its selector and the connections it owns."""

    def __init__(self, handler: Callable[[Request], Response], *, max_body_bytes: int, timeout_s: float,
                 server_name: str):
        self._handler, self._max_body, self._timeout = handler, max_body_bytes, timeout_s
        self._server_name = server_name
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, _READ, _WAKE)
        self._incoming: collections.deque[tuple[socket.socket, str]] = collections.deque()  # from other threads
        self._listener: socket.socket | None = None
        self._hand_out: Callable[[socket.socket, str], None] | None = None
        self._connections: set[_Connection] = set()
        self._stopping = False
        self.thread: threading.Thread | None = None

    def listen(self, listener: socket.socket, hand_out: Callable[[socket.socket, str], None]) -> None:
        """Accept on ``listener`` and give each connection to ``hand_out`` (before :meth:`start`)."""
        self._listener, self._hand_out = listener, hand_out
        self._selector.register(listener, _READ, None)

    def start(self, name: str) -> None:
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self._stopping = True
        if self.thread is not None and self.thread.is_alive():
            self._wake()
            self.thread.join(timeout=5)
        else:
            self._close_all()

    def adopt(self, sock: socket.socket, peer: str) -> None:
        """Serve ``sock`` on this loop; called from any thread."""
        if self.thread is not None and threading.current_thread() is self.thread:
            self._register(sock, peer)
        else:
            self._incoming.append((sock, peer))
            self._wake()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except (BlockingIOError, InterruptedError):  # already woken and not yet drained
            pass

    # --- the loop -------------------------------------------------------------------------------

    def _run(self) -> None:
        select = self._selector.select
        next_sweep = time.monotonic() + _TICK_S
        try:
            while not self._stopping:
                for key, mask in select(_TICK_S):
                    conn = key.data
                    if conn is None:
                        self._accept()
                    elif conn is _WAKE:
                        self._adopt_incoming()
                    else:
                        try:
                            if mask & _WRITE:
                                self._on_writable(conn)
                            else:
                                self._on_readable(conn)
                        except Exception:  # noqa: BLE001 - one connection must never take the server down
                            log.exception("scoring connection from %s failed", conn.peer)
                            self._close(conn)
                now = time.monotonic()
                if now >= next_sweep:
                    next_sweep = now + _TICK_S
                    for conn in [c for c in self._connections if c.deadline <= now]:
                        log.debug("scoring client %s timed out", conn.peer)
                        self._close(conn)
        finally:
            self._close_all()

    def _accept(self) -> None:
        assert self._listener is not None and self._hand_out is not None
        while True:
            try:
                sock, peer = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. out of file descriptors: the client waits in the backlog
                log.warning("scoring endpoint cannot accept a connection: %s", exc)
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # answers go out in one send each
            self._hand_out(sock, str(peer[0]))

    def _adopt_incoming(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        while self._incoming:
            self._register(*self._incoming.popleft())

    def _register(self, sock: socket.socket, peer: str) -> None:
        if self._stopping:
            sock.close()
            return
        conn = _Connection(sock, peer, HeadParser(self._max_body), time.monotonic() + self._timeout)
        self._connections.add(conn)
        self._selector.register(sock, _READ, conn)

    def _on_readable(self, conn: _Connection) -> None:
        try:
            data = conn.sock.recv(_READ_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # reset by the client: routine
            log.debug("scoring client %s went away: %s", conn.peer, exc)
            self._close(conn)
            return
        if not data:
            conn.eof = True
        else:
            if not conn.buffer or conn.request is not None:  # a new request begins, or its body moves on
                conn.deadline = time.monotonic() + self._timeout
            conn.buffer += data
        self._serve(conn)

    def _on_writable(self, conn: _Connection) -> None:
        if self._send(conn):
            self._serve(conn)  # requests that arrived while the answers waited

    # --- requests -------------------------------------------------------------------------------

    def _serve(self, conn: _Connection) -> None:
        """Answer every whole request in the buffer, in order, sending every ``_FLUSH_AT`` bytes of answers."""
        buffer, out = conn.buffer, conn.out
        pos = 0
        while not conn.closing:
            request = conn.request
            if request is None:
                try:
                    parsed = conn.parser.parse(buffer, pos)
                except HeadError as exc:
                    self._queue(conn, error_response(exc.status, str(exc)), head_only=False, close=True)
                    break
                if parsed is None:
                    if conn.eof:  # a head cut short: nothing to answer
                        conn.closing = True
                    break
                request, pos = parsed
                conn.request = request
                if request.expect_continue and request.length and len(buffer) - pos < request.length:
                    out.append(_CONTINUE)
            length = request.length or 0
            if len(buffer) - pos < length:
                if conn.eof:
                    self._queue(conn, error_response(400, "request body ended early"), head_only=False, close=True)
                break
            if length:
                request.body = bytes(memoryview(buffer)[pos:pos + length])
                pos += length
            conn.request = None
            self._queue(conn, self._answer(conn, request), head_only=request.method == "HEAD",
                        close=not request.keep_alive)
            if conn.pending >= _FLUSH_AT:
                del buffer[:pos]
                pos = 0
                if not self._send(conn):
                    return
        if pos:
            del buffer[:pos]
        if out:
            self._send(conn)
        elif conn.closing or conn.eof:
            self._close(conn)

    def _answer(self, conn: _Connection, request: Request) -> Response:
        try:
            response = self._handler(request)
        except Exception as exc:  # noqa: BLE001 - one request must never take the server down
            log.exception("scoring request %s %s failed", request.method, request.path)
            response = error_response(500, f"internal error: {type(exc).__name__}")
        if log.isEnabledFor(logging.DEBUG):
            log.debug('%s "%s %s" %d %d', conn.peer, request.method, request.path, response.status,
                      len(response.body))
        return response

    def _queue(self, conn: _Connection, response: Response, *, head_only: bool, close: bool) -> None:
        """The whole answer as bytes on the connection's queue; ``close`` (or the response's) ends it after."""
        close = close or response.close
        body = response.body
        head = (f"HTTP/1.1 {response.status} {_REASONS.get(response.status, '')}\r\n"
                f"Server: {self._server_name}\r\nDate: {_http_date()}\r\n"
                f"Content-Type: {response.content_type}\r\nContent-Length: {len(body)}\r\n")
        if response.headers:
            head += "".join(f"{key}: {value}\r\n" for key, value in response.headers.items())
        data = (head + ("Connection: close\r\n\r\n" if close else "\r\n")).encode("latin-1")
        if not head_only:
            data += body
        conn.out.append(data)
        conn.pending += len(data)
        if close:
            conn.closing = True

    def _send(self, conn: _Connection) -> bool:
        """Send the queued answers; True once all have left (the connection may then be closed), False if some
        wait for the client to read (reading stops until they have left)."""
        out = conn.out
        data = out[0] if len(out) == 1 else b"".join(out)
        try:
            sent = conn.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            log.debug("scoring client %s went away: %s", conn.peer, exc)
            self._close(conn)
            return False
        conn.deadline = time.monotonic() + self._timeout
        if sent < len(data):
            out[:] = [data[sent:]]
            conn.pending = len(data) - sent
            if not conn.writing:
                conn.writing = True
                self._selector.modify(conn.sock, _WRITE, conn)
            return False
        out.clear()
        conn.pending = 0
        if conn.closing or (conn.eof and not conn.buffer):
            self._close(conn)
            return False
        if conn.writing:
            conn.writing = False
            self._selector.modify(conn.sock, _READ, conn)
        return True

    def _close(self, conn: _Connection) -> None:
        if conn not in self._connections:
            return
        self._connections.discard(conn)
        try:
            self._selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        try:
            conn.sock.shutdown(socket.SHUT_WR)  # the answers already sent go before the FIN
        except OSError:
            pass
        conn.sock.close()

    def _close_all(self) -> None:
        for conn in list(self._connections):
            self._close(conn)
        while self._incoming:
            self._incoming.popleft()[0].close()
        self._selector.close()
        for sock in (self._wake_r, self._wake_w):
            sock.close()


_REASONS = {status.value: status.phrase for status in HTTPStatus}
_date_cache: tuple[int, str] = (0, "")


def _http_date() -> str:
    """The Date header's value, formatted once a second."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, email.utils.formatdate(now, usegmt=True))
    return _date_cache[1]
