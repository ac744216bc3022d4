"""A small pool of keep-alive HTTP(S) connections to one host, on the standard library's http.client.

:class:`HttpPool` is what :class:`~edge_agent.cloud_client.CloudClient`
sends through. It keeps at most ``max_connections`` connections open (a
caller beyond that waits up to ``timeout_s`` for one to come back), reuses
the most recently returned one, and builds nothing per call: the SSL
context is the one it was given, built once by its owner. A connection
the server closed while idle (its idle timeout, a restart) is found before
use and replaced; one that fails on a reused connection before any answer
(the close raced the send) is retried once on a new connection when the
call is idempotent. Neither counts as a failure or as a try of the retry
policy. It does not retry otherwise, follow redirects or decompress.

Errors: :class:`ConnectionFailed` (a ``TransportError``) with ``sent``,
whether the request had gone out (:data:`fleet_protocol.retry.NOT_SENT` or
``LOST``), and the ``partial`` body when an answer broke off (content fetches
resume it with ``Range``); an answer over ``max_response_bytes`` is a ``TransportError``.
Also used for bundle content (:mod:`edge_agent.content_http`), one pool per origin.
"""

from __future__ import annotations

import http.client
import select
import ssl
import threading
from dataclasses import dataclass, field

from fleet_protocol.errors import TransportError
from fleet_protocol.retry import LOST, NOT_SENT

# a reused connection that fails like this before any answer was closed by the server while idle
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


class ConnectionFailed(TransportError):
    """The connection failed; ``failure`` is NOT_SENT (no request went out) or LOST (it had)."""

    def __init__(self, message: str, failure: str, *, partial: bytes = b"", status: int | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message, code="cloud_unreachable")
        self.failure = failure
        self.partial = partial  # the body's bytes that did arrive before the connection broke (a Range resumes)
        self.status = status  # the answer's status, when one had come
        self.headers = headers or {}


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    retry_after: str | None  # the Retry-After header, as sent
    headers: dict[str, str] = field(default_factory=dict)  # every header, names in lower case


class HttpPool:
    def __init__(self, host: str, port: int | None, *, ssl_context: ssl.SSLContext | None, timeout_s: float,
                 max_connections: int = 4, max_response_bytes: int = 64 * 1024**2):
        self.host, self.port = host, port
        self._ssl_context = ssl_context
        self.timeout_s = timeout_s
        self.max_response_bytes = max_response_bytes
        self._slots = threading.BoundedSemaphore(max_connections)
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def request(self, method: str, path: str, body: bytes | None, headers: dict[str, str], *,
                idempotent: bool) -> Response:
        """Send one request on a pooled connection and read the whole answer."""
        if not self._slots.acquire(timeout=self.timeout_s):
            raise ConnectionFailed(f"all connections to {self.host} stayed busy for {self.timeout_s:g}s", NOT_SENT)
        try:
            conn = self._checkout()
            reused = conn.sock is not None
            try:
                response = self._exchange(conn, method, path, body, headers)
            except _STALE:
                conn.close()
                if not (reused and idempotent):
                    raise
                response = self._exchange(conn, method, path, body, headers)  # a new connection, once
        except ConnectionFailed:
            conn.close()
            raise
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise ConnectionFailed(f"{type(exc).__name__}: {exc}", LOST) from None
        finally:
            self._slots.release()
        return response

    def close(self) -> None:
        """Close the idle connections (at shutdown; a call still in flight returns its own afterwards)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _checkout(self) -> http.client.HTTPConnection:
        with self._lock:
            while self._idle:
                conn = self._idle.pop()
                if not _dropped(conn):
                    return conn
                conn.close()
        if self._ssl_context is not None:
            return http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout_s,
                                               context=self._ssl_context)
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)

    def _exchange(self, conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None,
                  headers: dict[str, str]) -> Response:
        if conn.sock is None:
            try:
                conn.connect()
            except (OSError, http.client.HTTPException) as exc:
                raise ConnectionFailed(f"{type(exc).__name__}: {exc}", NOT_SENT) from None
        conn.request(method, path, body=body, headers=headers)
        answer = conn.getresponse()
        headers = {name.lower(): value for name, value in answer.getheaders()}
        try:
            data = answer.read(self.max_response_bytes + 1)
        except http.client.IncompleteRead as exc:
            raise ConnectionFailed(f"the answer broke off after {len(exc.partial)} bytes", LOST,
                                   partial=exc.partial, status=answer.status, headers=headers) from None
        if len(data) > self.max_response_bytes:
            conn.close()
            raise TransportError(f"the answer is larger than {self.max_response_bytes} bytes",
                                 code="cloud_response_too_large")
        response = Response(answer.status, data, answer.getheader("Retry-After"), headers)
        if answer.isclosed() and conn.sock is not None:
            with self._lock:
                self._idle.append(conn)
        else:
            conn.close()
        return response


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """Whether an idle connection's socket is gone or readable (the server's close, or bytes nobody asked for)."""
    if conn.sock is None:
        return True
    poller = select.poll()
    poller.register(conn.sock, select.POLLIN)
    return bool(poller.poll(0))
