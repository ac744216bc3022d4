"""HTTP/1.1 request heads and body framing out of a connection's bytes: the parser of :mod:`edge_agent.http_loop`.

:class:`HeadParser` reads one request head at a time out of a buffer that
grows as bytes arrive, resuming where its last call stopped (a head sent a
byte at a time is scanned once, not once per byte). It returns a
:class:`Request` whose ``length`` says how many body bytes follow, or raises
:class:`HeadError` with the status to answer; after a :class:`HeadError` the
connection is answered and closed (what follows cannot be framed).

Limits and refusals (those of ``http.server``, which served this endpoint
before, plus the framing rules a body needs):

- the request line at most 64 KiB (414), at most 100 header lines of at most
  64 KiB each (431); ``METHOD TARGET HTTP/1.x``, else 400 (505 for HTTP/2 and
  later, 501 for a method the endpoint has no routes for);
- folded (continuation) or colon-less header lines, a space before the colon,
  and ``Content-Length`` given twice with different values: 400;
- any ``Transfer-Encoding`` (chunked bodies are not supported) and a
  ``Content-Length`` that is not decimal digits: 411; a declared length over
  ``max_body_bytes``: 413, decided on the head, before any body is read.

It does no I/O and knows nothing of routes or timeouts (:mod:`edge_agent.http_loop` does).
"""

from __future__ import annotations

from fleet_protocol.fields import is_ascii_decimal

MAX_LINE = 65_536  # bytes in one request or header line, newline included (http.client's _MAXLINE)
MAX_HEADERS = 100  # header lines in one head (http.client's _MAXHEADERS)
METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"})


class HeadError(Exception):
    """A head that cannot be served: answer ``status`` with the message, then close the connection."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Headers(dict):
    """Request headers by lower-case name; ``get`` takes any case. The first of repeated headers wins."""

    def get(self, name: str, default=None):  # type: ignore[override]
        return super().get(name.lower(), default)


class Request:
    """One request: its head, and ``body`` once the connection has read ``length`` bytes of it."""

    __slots__ = ("method", "path", "headers", "keep_alive", "length", "expect_continue", "body")

    def __init__(self, method: str, path: str, headers: Headers, keep_alive: bool, length: int | None):
        self.method, self.path, self.headers, self.keep_alive = method, path, headers, keep_alive
        self.length = length  # None: no Content-Length (no body)
        self.expect_continue = headers.get("expect", "").lower() == "100-continue"
        self.body = b""


class HeadParser:
    """One connection's parser: :meth:`parse` is called again with the same buffer, grown, until a head is whole."""

    __slots__ = ("_max_body", "_scanned", "_lines")

    def __init__(self, max_body_bytes: int):
        self._max_body = max_body_bytes
        self._scanned = 0  # bytes of an incomplete head already split into lines
        self._lines: list[bytes] = []

    def parse(self, buffer: bytes | bytearray, start: int) -> tuple[Request, int] | None:
        """The request whose head begins at ``start`` and the offset its body begins at; None if incomplete
        (call again with the head at ``start`` of the grown buffer: bytes before it may have been dropped)."""
        pos = start + self._scanned
        lines = self._lines
        find = buffer.find
        while True:
            end = find(b"\n", pos)
            if end < 0:
                if len(buffer) - pos > MAX_LINE:
                    raise _line_too_long(lines)
                self._scanned = pos - start
                return None
            if end + 1 - pos > MAX_LINE:
                raise _line_too_long(lines)
            if lines and (end == pos or (end == pos + 1 and buffer[pos] == 13)):  # the blank line: head ends
                break
            lines.append(buffer[pos:end])
            if len(lines) > MAX_HEADERS + 1:
                raise HeadError(431, "Too many headers")
            pos = end + 1
        self._scanned, self._lines = 0, []
        return self._request(lines), end + 1

    def _request(self, lines: list[bytes]) -> Request:
        words = lines[0].split()
        if len(words) != 3:
            raise HeadError(400, f"Bad request syntax ({lines[0].decode('iso-8859-1').strip()[:80]!r})")
        method, target, version = (w.decode("iso-8859-1") for w in words)
        keep_alive = _keep_alive_by_default(version)
        if method not in METHODS:
            raise HeadError(501, f"Unsupported method ({method[:40]!r})")
        headers = Headers()
        for raw in lines[1:]:
            name, colon, value = raw.decode("iso-8859-1").partition(":")
            if not colon or not name or name[0] in " \t" or name != name.rstrip():
                raise HeadError(400, "Malformed header line")
            key, value = name.lower(), value.strip()
            if key == "content-length" and headers.get(key, value) != value:
                raise HeadError(400, "Conflicting Content-Length headers")
            headers.setdefault(key, value)
        connection = headers.get("connection", "").lower()
        if connection == "close":
            keep_alive = False
        elif connection == "keep-alive":
            keep_alive = True
        path = "/" + target.lstrip("/") if target.startswith("//") else target
        return Request(method, path, headers, keep_alive, self._length(headers))

    def _length(self, headers: Headers) -> int | None:
        coding = headers.get("transfer-encoding")
        if coding is not None:
            raise HeadError(411, f"send the body with a Content-Length ({coding[:40]} encoding is not supported)")
        length = headers.get("content-length")
        if length is None:
            return None
        if not is_ascii_decimal(length):
            raise HeadError(411, "a Content-Length header of decimal digits is required")
        # compare digits before int(), which refuses a string of over 4,300 of them
        if len(length.lstrip("0")) > len(str(self._max_body)) or int(length) > self._max_body:
            shown = length if len(length) <= 24 else f"a {len(length)}-digit number of"
            raise HeadError(413, f"request body of {shown} bytes is more than the {self._max_body} allowed")
        return int(length)


def _keep_alive_by_default(version: str) -> bool:
    """HTTP/1.1 keeps the connection open unless told otherwise, HTTP/1.0 closes it; others are refused."""
    if version == "HTTP/1.1":
        return True
    if version == "HTTP/1.0":
        return False
    major, dot, minor = version.removeprefix("HTTP/").partition(".")
    if not version.startswith("HTTP/") or not dot or not is_ascii_decimal(major) or not is_ascii_decimal(minor) \
            or len(major) > 10 or len(minor) > 10:
        raise HeadError(400, f"Bad request version ({version[:20]!r})")
    if int(major) >= 2:
        raise HeadError(505, f"Invalid HTTP version ({major}.{minor})")
    return (int(major), int(minor)) >= (1, 1)


def _line_too_long(lines: list[bytes]) -> HeadError:
    return HeadError(414, "Request-URI Too Long") if not lines else HeadError(431, "Line too long")
