"""Local Open Inference Protocol v2 endpoint, standard library only.

The routes of the agent's REST scoring API, served by the one-thread
event-loop server of :mod:`edge_agent.http_loop` (HTTP/1.1, keep-alive,
pipelining, the hostile-client limits of :mod:`edge_agent.http_head`),
bound to ``scoring_host`` (127.0.0.1 by default). It reads the runtime's
serving table and never touches the network beyond its own socket, so it
keeps serving with the broker and the fleet server down. No web framework:
the agent's idle memory stays close to that of onnxruntime + paho + numpy
alone.

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
method; 411 no Content-Length (or a chunked body); 413 body over ``max_request_bytes``; 500 the
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

import json
from http import HTTPStatus
from typing import Callable

from edgefleet_runtime.runtime import LoadedModule
from edgefleet_runtime.scored import Scored, ScoringError, asks_binary, request_json
from fleet_protocol import oip, oip_binary
from fleet_protocol.canonical import parse_json_object
from fleet_protocol.errors import MessageError

from .feedback_route import FeedbackRoute
from .http_head import Request
from .http_loop import HttpLoopServer, Response, error_response
from .offload import Offload
from .scoring_service import ScoringService


class ScoringServer:
    def __init__(self, *, host: str, port: int, table: dict[str, LoadedModule], ready: Callable[[], bool],
                 max_request_bytes: int = 16_777_216, agent_version: str = "", offload: Offload | None = None,
                 request_timeout_s: float = 30.0, metrics: Callable[[], tuple[bytes, str]] | None = None,
                 feedback: FeedbackRoute | None = None):
        """``feedback`` turns on labels for answered requests (:mod:`edge_agent.feedback_route`);
        ``request_timeout_s`` bounds how long a client may take to send a request or stay idle
        (:mod:`edge_agent.http_loop`)."""
        service = ScoringService(table=table, ready=ready, agent_version=agent_version, offload=offload,
                                 feedback=feedback,
                                 extensions=(oip_binary.EXTENSION,))
        self.service = service
        self._server = HttpLoopServer((host, port), _Routes(service, metrics).handle,
                                      max_body_bytes=max_request_bytes, timeout_s=request_timeout_s,
                                      server_name="edgefleet-agent", threads=2)

    @property
    def address(self) -> tuple[str, int]:
        return self._server.address

    @property
    def _thread(self):
        """The serving thread (the agent's watchdog checks that it runs)."""
        return self._server._thread

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop()


class _Routes:
    """One request in, one :class:`~edge_agent.http_loop.Response` out; errors become ``{"error": ...}``."""

    def __init__(self, service: ScoringService, metrics: Callable[[], tuple[bytes, str]] | None):
        self.service = service
        self.metrics = metrics  # the agent's metrics: text and content type

    def handle(self, request: Request) -> Response:
        try:
            return self._route(request, request.path.split("?", 1)[0].rstrip("/").split("/"))
        except ScoringError as exc:
            # without a Content-Length, a body the client sends anyway would be parsed as the next request
            close = exc.status in (HTTPStatus.REQUEST_ENTITY_TOO_LARGE, HTTPStatus.LENGTH_REQUIRED)
            return error_response(exc.status, str(exc), exc.headers, close=close)

    def _route(self, request: Request, parts: list[str]) -> Response:
        # parts of "/v2/models/x/infer" are ["", "v2", "models", "x", "infer"]
        service, method = self.service, request.method
        if len(parts) < 2 or parts[0] != "" or parts[1] != "v2":
            if parts == ["", "metrics"] and self.metrics is not None:
                _only(method, "GET")
                text, content_type = self.metrics()
                return Response(200, text, content_type)
            raise ScoringError(404, f"no route {request.path}")
        rest = parts[2:]
        if not rest:
            _only(method, "GET")
            return _json(200, service.server_metadata())
        if rest[0] == "health" and len(rest) == 2 and rest[1] in ("live", "ready"):
            _only(method, "GET")
            if rest[1] == "live" or service.ready():
                return _json(200, {"live": True} if rest[1] == "live" else {"ready": True})
            raise ScoringError(503, "agent is still loading its modules")
        if rest[0] != "models" or len(rest) < 2:
            raise ScoringError(404, f"no route {request.path}")
        name, tail = rest[1], rest[2:]
        version: int | None = None
        if len(tail) >= 2 and tail[0] == "versions":
            try:
                version = int(tail[1])
            except ValueError:
                raise ScoringError(404, f"model {name!r} has no version {tail[1]!r}") from None
            tail = tail[2:]
        if not tail:
            _only(method, "GET")
            return _json(200, service.model_metadata(service.module(name, version)))
        if tail == ["ready"]:
            _only(method, "GET")
            service.module(name, version)
            return _json(200, {"name": name, "ready": True})
        if tail == ["infer"]:
            _only(method, "POST")
            raw = _body(request)
            binary_header = request.headers.get(oip_binary.HEADER)
            decoded = _decode_request(raw, binary_header)
            plain = binary_header is None and not asks_binary(decoded)
            scored = service.infer(name, version, decoded, request_bytes=len(raw),
                                   body=(lambda: raw) if plain else (lambda: request_json(decoded)))
            return _reply(decoded, scored)
        if tail == ["feedback"] and version is None and service.feedback is not None:
            _only(method, "POST")
            status, answer, *headers = service.feedback.post(name, _parse_json(_body(request)))
            return _json(status, answer, *headers)
        raise ScoringError(404, f"no route {request.path}")


def _reply(request: oip.InferenceRequest, scored: Scored) -> Response:
    """The JSON response, or a binary one for outputs the request asked as binary."""
    try:
        binary = request.binary_outputs(list(scored.outputs))
        if not binary:
            return _json(200, oip.encode_response(scored.model_name, scored.model_version, scored.outputs,
                                                  id=scored.id, parameters=scored.parameters))
        body, header_length = oip_binary.encode_response(
            scored.model_name, scored.model_version, scored.outputs, binary=binary, id=scored.id,
            parameters=scored.parameters)
    except MessageError as exc:
        raise ScoringError(500, f"model output cannot be encoded: {exc}") from None
    return Response(200, body, "application/octet-stream", {oip_binary.HEADER: str(header_length)})


def _json(status: int, body: dict, headers: dict[str, str] | None = None) -> Response:
    return Response(status, json.dumps(body, separators=(",", ":")).encode(), headers=headers)


def _only(method: str, allowed: str) -> None:
    if method != allowed:
        raise ScoringError(405, f"{method} is not allowed here; use {allowed}", {"Allow": allowed})


def _body(request: Request) -> bytes:
    """The request's body; 411 without a Content-Length (the server has read and bounded the body already)."""
    if request.length is None:
        raise ScoringError(411, "a Content-Length header is required")
    return request.body


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
