"""Local Open Inference Protocol v2 endpoint, standard library only.

``http.server.ThreadingHTTPServer`` speaking HTTP/1.1 with keep-alive (every
response has a Content-Length), bound to ``scoring_host`` (127.0.0.1 by
default). It reads the runtime's serving table and never touches the
network beyond its own socket, so it keeps serving with the broker and the
fleet server down. No web framework: the agent's idle memory stays close to
that of onnxruntime + paho + numpy alone.

Routes::

    GET  /v2                                     server metadata
    GET  /v2/health/live | /v2/health/ready
    GET  /v2/models/{name}[/versions/{v}]         model metadata
    GET  /v2/models/{name}[/versions/{v}]/ready
    POST /v2/models/{name}[/versions/{v}]/infer
    POST /v2/models/{name}/feedback              labels for a scored request, by its id
    GET  /metrics                                 Prometheus text format (:mod:`edge_agent.metrics`), when
                                                  the agent passes ``metrics``; no token, like the rest

Bodies are JSON, or JSON plus raw tensor bytes (the binary tensor data
extension, :mod:`fleet_protocol.oip_binary`: an ``Inference-Header-Content-Length``
header on the request; binary outputs when the request asks for them). What
each route answers is :class:`~edge_agent.scoring_service.ScoringService`'s,
which the gRPC endpoint (:mod:`edge_agent.grpc_api`) shares.

Errors are ``{"error": "..."}``: 400 the client's request is wrong
(malformed body; an input unknown, missing, of the wrong datatype or shape,
named with what the module expects: ``input 'x': missing; the module
expects FP32 [-1, 4]``); 404 unknown model, version or route; 405 wrong
method; 411 no Content-Length; 413 body over ``max_request_bytes``; 500 the
model or the module's entry script failed on inputs that fit (our side: a
client may retry); 502 the cloud refused the agent (e.g. its token); 503
with ``Retry-After`` a temporary failure (out of memory) or a request that
needs the cloud while the cloud cannot be reached (with the reason).

With an :class:`~edge_agent.offload.Offload` (the agent passes one), each
inference request may go to the cloud instead (see
:mod:`edge_agent.fallback` for when), and requests are sampled for data
capture. Every response says where it was scored in its ``parameters``:
``scored_on`` (``local`` or ``cloud``), ``accelerator``, ``model_version``,
and ``fallback_reason`` when it went to the cloud; a joint answer (rows
below ``fallback.confidence_below``) says which rows the cloud answered
(:mod:`edge_agent.joint`).

With a :class:`~edge_agent.feedback_route.FeedbackRoute` (the agent passes
one), every answered request carries an ``id`` (the request's own, or one
assigned) and is remembered for labels, which ``POST .../feedback`` joins
to it; that module says how. Requests over gRPC are remembered the same way.
"""

from __future__ import annotations

import email.utils
import json
import logging
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from edgefleet_runtime.runtime import LoadedModule
from edgefleet_runtime.scored import Scored, ScoringError, asks_binary, request_json
from fleet_protocol import oip, oip_binary
from fleet_protocol.canonical import parse_json_object
from fleet_protocol.errors import MessageError
from fleet_protocol.fields import is_ascii_decimal

from .feedback_route import FeedbackRoute
from .offload import Offload
from .scoring_service import ScoringService

log = logging.getLogger("edgefleet.agent.scoring")


class ScoringServer:
    def __init__(self, *, host: str, port: int, table: dict[str, LoadedModule], ready: Callable[[], bool],
                 max_request_bytes: int = 16_777_216, agent_version: str = "", offload: Offload | None = None,
                 request_timeout_s: float = 30.0, metrics: Callable[[], tuple[bytes, str]] | None = None,
                 feedback: FeedbackRoute | None = None):
        """``feedback`` turns on labels for answered requests (:mod:`edge_agent.feedback_route`)."""
        service = ScoringService(table=table, ready=ready, agent_version=agent_version, offload=offload,
                                 feedback=feedback,
                                 extensions=(oip_binary.EXTENSION,))
        self.service = service
        handler = type("Handler", (_Handler,), {"service": service, "max_request_bytes": max_request_bytes,
                                                 "timeout": request_timeout_s,
                                                 "metrics": None if metrics is None else staticmethod(metrics)})
        self._server = _Server((host, port), handler)
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="scoring-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:  # shutdown() waits for serve_forever, forever if it never ran
            self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


class _Server(ThreadingHTTPServer):  # a thread per connection, daemonic (ThreadingHTTPServer's default)
    def handle_error(self, request, client_address) -> None:
        """A client that hangs up mid-request is routine (load generators do it on exit): no traceback."""
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            log.debug("scoring client %s went away: %s", client_address[0], sys.exc_info()[1])
            return
        log.exception("scoring connection from %s failed", client_address[0])


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "edgefleet-agent"
    # _send writes each response at once, but the base class's error pages (send_error) leave headers and body
    # in separate writes: with Nagle on, a keep-alive client would wait ~40 ms for those.
    disable_nagle_algorithm = True
    timeout: float  # seconds a client may stay silent mid-request (or idle on keep-alive) before it is closed
    service: ScoringService
    max_request_bytes: int
    metrics: Callable[[], tuple[bytes, str]] | None  # the agent's metrics: text and content type

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        log.debug("%s " + format, self.address_string(), *args)

    # --- request head ---------------------------------------------------------------------------

    def parse_request(self) -> bool:
        """An HTTP/1.1 request's head without the ``email`` package (half the handler's time with it).

        Anything but a plain ``METHOD PATH HTTP/1.1`` line goes to the base class, which reads the headers
        its own way; on this path the base class's rules hold: Connection, Expect: 100-continue, at most
        100 header lines of at most 64 KiB each (431). Folded or colon-less lines, and Content-Length
        given twice with different values, are refused with 400.
        """
        words = self.raw_requestline.split()
        if len(words) != 3 or words[2] != b"HTTP/1.1":
            return super().parse_request()
        self.requestline = self.raw_requestline.decode("iso-8859-1").rstrip("\r\n")
        self.command, path, self.request_version = (w.decode("iso-8859-1") for w in words)
        self.path = "/" + path.lstrip("/") if path.startswith("//") else path
        self.close_connection = False
        headers = self.headers = _Headers()
        readline = self.rfile.readline
        for _ in range(_MAX_HEADERS + 1):
            line = readline(_MAX_LINE + 1)
            if len(line) > _MAX_LINE:
                self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Line too long")
                return False
            if line in (b"\r\n", b"\n", b""):
                break
            name, colon, value = line.decode("iso-8859-1").partition(":")
            key = name.lower()
            if not colon or not name or name[0] in " \t" or name != name.rstrip():
                self.send_error(HTTPStatus.BAD_REQUEST, "Malformed header line")
                return False
            value = value.strip()
            if key == "content-length" and headers.get(key, value) != value:
                self.send_error(HTTPStatus.BAD_REQUEST, "Conflicting Content-Length headers")
                return False
            headers.setdefault(key, value)  # the first of repeated headers, as the base class reads them
        else:
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Too many headers")
            return False
        connection = headers.get("connection", "").lower()
        if connection == "close":
            self.close_connection = True
        if headers.get("expect", "").lower() == "100-continue":
            return self.handle_expect_100()
        return True

    # --- dispatch -------------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:  # noqa: N802
        self._dispatch("PATCH")

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch("HEAD")

    def _dispatch(self, method: str) -> None:
        try:
            reply = self._route(method, self.path.split("?", 1)[0].rstrip("/").split("/"))
            if reply is not None:
                self._send(*reply)
        except ScoringError as exc:
            if exc.status in (HTTPStatus.REQUEST_ENTITY_TOO_LARGE, HTTPStatus.LENGTH_REQUIRED):
                self.close_connection = True  # the unread body would be parsed as the next request
            self._send(exc.status, {"error": str(exc)}, exc.headers)
        except Exception as exc:  # noqa: BLE001 - one request must never take the server down
            log.exception("scoring request %s %s failed", method, self.path)
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"internal error: {type(exc).__name__}"})

    def _route(self, method: str, parts: list[str]) -> tuple[int, dict] | None:
        """The status and JSON body to send, or None when the response was written here (metrics, binary)."""
        # parts of "/v2/models/x/infer" are ["", "v2", "models", "x", "infer"]
        service = self.service
        if len(parts) < 2 or parts[0] != "" or parts[1] != "v2":
            if parts == ["", "metrics"] and self.metrics is not None:
                self._only(method, "GET")
                text, content_type = self.metrics()
                self._send(200, None, raw=text, content_type=content_type)
                return None
            raise ScoringError(404, f"no route {self.path}")
        rest = parts[2:]
        if not rest:
            self._only(method, "GET")
            return 200, service.server_metadata()
        if rest[0] == "health" and len(rest) == 2 and rest[1] in ("live", "ready"):
            self._only(method, "GET")
            if rest[1] == "live" or service.ready():
                return 200, {"live": True} if rest[1] == "live" else {"ready": True}
            raise ScoringError(503, "agent is still loading its modules")
        if rest[0] != "models" or len(rest) < 2:
            raise ScoringError(404, f"no route {self.path}")
        name, tail = rest[1], rest[2:]
        version: int | None = None
        if len(tail) >= 2 and tail[0] == "versions":
            try:
                version = int(tail[1])
            except ValueError:
                raise ScoringError(404, f"model {name!r} has no version {tail[1]!r}") from None
            tail = tail[2:]
        if not tail:
            self._only(method, "GET")
            return 200, service.model_metadata(service.module(name, version))
        if tail == ["ready"]:
            self._only(method, "GET")
            service.module(name, version)
            return 200, {"name": name, "ready": True}
        if tail == ["infer"]:
            self._only(method, "POST")
            raw = self._read_body()  # read before looking the model up, so the connection stays usable
            binary_header = self.headers.get(oip_binary.HEADER)
            request = _decode_request(raw, binary_header)
            plain = binary_header is None and not asks_binary(request)
            scored = service.infer(name, version, request, request_bytes=len(raw),
                                   body=(lambda: raw) if plain else (lambda: request_json(request)))
            return self._reply(request, scored)
        if tail == ["feedback"] and version is None and service.feedback is not None:
            self._only(method, "POST")
            return service.feedback.post(name, _parse_json(self._read_body()))
        raise ScoringError(404, f"no route {self.path}")

    def _reply(self, request: oip.InferenceRequest, scored: Scored) -> tuple[int, dict] | None:
        """The JSON response to send, or None once a binary one (outputs the request asked as binary) is sent."""
        try:
            binary = request.binary_outputs(list(scored.outputs))
            if not binary:
                return 200, oip.encode_response(scored.model_name, scored.model_version, scored.outputs,
                                                id=scored.id, parameters=scored.parameters)
            body, header_length = oip_binary.encode_response(
                scored.model_name, scored.model_version, scored.outputs, binary=binary, id=scored.id,
                parameters=scored.parameters)
        except MessageError as exc:
            raise ScoringError(500, f"model output cannot be encoded: {exc}") from None
        self._send(200, None, {oip_binary.HEADER: str(header_length)}, raw=body,
                   content_type="application/octet-stream")
        return None

    def _only(self, method: str, allowed: str) -> None:
        if method != allowed:
            self._drain()
            raise ScoringError(405, f"{method} is not allowed here; use {allowed}", {"Allow": allowed})

    # --- bodies ---------------------------------------------------------------------------------

    def _drain(self) -> None:
        length = self.headers.get("Content-Length")
        if length and is_ascii_decimal(length) and 0 < self._declared(length) <= self.max_request_bytes:
            self.rfile.read(int(length))
        elif length and length != "0":
            self.close_connection = True

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            raise ScoringError(411, "send the body with a Content-Length (chunked encoding is not supported)")
        length = self.headers.get("Content-Length")
        if length is None or not is_ascii_decimal(length.strip()):
            raise ScoringError(411, "a Content-Length header is required")
        size = self._declared(length.strip())
        if size > self.max_request_bytes:
            shown = length.strip() if len(length.strip()) <= 24 else f"a {len(length.strip())}-digit number of"
            raise ScoringError(413, f"request body of {shown} bytes is more than the {self.max_request_bytes} allowed")
        data = self.rfile.read(size)
        if len(data) != size:
            self.close_connection = True
            raise ScoringError(400, "request body ended early")
        return data

    def _declared(self, length: str) -> int:
        """A decimal Content-Length, or ``max_request_bytes + 1`` for one of more digits than that (before int(),
        which refuses a string of over 4,300 digits)."""
        if len(length.lstrip("0")) > len(str(self.max_request_bytes)):
            return self.max_request_bytes + 1
        return int(length)

    def _send(self, status: int, body: dict | None, headers: dict[str, str] | None = None, *,
              raw: bytes | None = None, content_type: str = "application/json") -> None:
        """The whole response in one write: one syscall, and no wait between headers and body.

        ``body`` as JSON, or ``raw`` bytes of ``content_type`` as they are.
        """
        data = json.dumps(body, separators=(",", ":")).encode() if raw is None else raw
        if log.isEnabledFor(logging.DEBUG):
            self.log_request(status, len(data))
        head = [f"{self.protocol_version} {status} {_REASONS.get(status, '')}\r\n"
                f"Server: {self.server_version}\r\nDate: {_http_date()}\r\n"
                f"Content-Type: {content_type}\r\nContent-Length: {len(data)}\r\n"]
        for key, value in (headers or {}).items():
            head.append(f"{key}: {value}\r\n")
        if self.close_connection:
            head.append("Connection: close\r\n")
        head.append("\r\n")
        response = "".join(head).encode("latin-1", "strict")
        self.wfile.write(response if self.command == "HEAD" else response + data)


_MAX_LINE, _MAX_HEADERS = 65536, 100  # the base class's limits (http.client's _MAXLINE and _MAXHEADERS)


class _Headers(dict):
    """Request headers by lower-case name; ``get`` takes any case, like the base class's message object."""

    def get(self, name: str, default=None):  # type: ignore[override]
        return super().get(name.lower(), default)


_REASONS = {status.value: status.phrase for status in HTTPStatus}
_date_cache: tuple[int, str] = (0, "")


def _http_date() -> str:
    """The Date header's value, formatted once a second."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, email.utils.formatdate(now, usegmt=True))
    return _date_cache[1]


def _parse_json(data: bytes) -> dict:
    try:
        return parse_json_object(data, what="request body", max_bytes=len(data))  # the size is checked on read
    except MessageError as exc:
        raise ScoringError(400, str(exc)) from None


def _decode_request(body: bytes, binary_header: str | None) -> oip.InferenceRequest:
    try:
        return oip_binary.decode_request(body, binary_header)  # the size is checked on read
    except MessageError as exc:
        raise ScoringError(400, str(exc)) from None
