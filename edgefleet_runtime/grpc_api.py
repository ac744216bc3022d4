"""Open Inference Protocol over gRPC (``inference.GRPCInferenceService``): the agent's and the server's.

:func:`serve` starts a grpcio server on ``host:port`` for a backend: the
agent's :class:`~edge_agent.scoring_service.AgentBackend` (the same answers as the REST
endpoint) or the server's cloud scoring
(:mod:`fleet_server.grpc_scoring`). Backends take decoded requests
(:mod:`fleet_protocol.oip_grpc`) and raise
:class:`~edgefleet_runtime.scored.ScoringError` with an HTTP status, which
becomes a gRPC status code here (:data:`STATUS_CODES`) with the same message.
Messages over ``max_request_bytes`` are refused by grpcio (RESOURCE_EXHAUSTED).
Importing this module needs grpcio: import it through :func:`edgefleet_runtime.grpc_extra.load`.
It does not speak REST (see :mod:`edge_agent.scoring_api`), and knows no agent or server: the backend does.
"""

from __future__ import annotations

import logging
from concurrent import futures
from typing import Callable, Protocol

import grpc

from fleet_protocol import oip, oip_grpc
from fleet_protocol.errors import MessageError

from .scored import Scored, ScoringError

log = logging.getLogger("edgefleet.grpc")

STATUS_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
                403: grpc.StatusCode.PERMISSION_DENIED, 404: grpc.StatusCode.NOT_FOUND,
                413: grpc.StatusCode.RESOURCE_EXHAUSTED, 500: grpc.StatusCode.INTERNAL,
                502: grpc.StatusCode.FAILED_PRECONDITION, 503: grpc.StatusCode.UNAVAILABLE}


class Backend(Protocol):
    def authorize(self, metadata: dict[str, str]) -> None: ...
    def ready(self) -> bool: ...
    def server_metadata(self) -> dict: ...
    def model_metadata(self, name: str, version: str) -> dict: ...
    def model_ready(self, name: str, version: str) -> None: ...  # raises ScoringError 404
    def infer(self, name: str, version: str, request: oip.InferenceRequest, request_bytes: int) -> Scored: ...


class GrpcServer:
    def __init__(self, backend: Backend, *, host: str, port: int, max_request_bytes: int, workers: int = 8,
                 max_queued: int = 32):
        """At most ``workers`` calls run at once and ``max_queued`` more wait; past that a call is refused at
        once with RESOURCE_EXHAUSTED, so a flood of calls holds no more than that many calls' buffers."""
        self._executor = futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="oip-grpc")
        self._server = grpc.server(self._executor, options=[("grpc.max_receive_message_length", max_request_bytes)],
                                   maximum_concurrent_rpcs=workers + max_queued)
        self._server.add_generic_rpc_handlers((_handlers(backend),))
        where = f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"  # IPv6: [::1]
        try:
            self.port = self._server.add_insecure_port(where)
        except RuntimeError as exc:  # grpcio's "Failed to bind"
            raise OSError(f"cannot serve gRPC on {where}: {exc}") from None
        if not self.port:
            raise OSError(f"cannot serve gRPC on {where}: the address is in use or not available")
        self.host = "127.0.0.1" if host in ("0.0.0.0", "", "::", "[::]") else where.rsplit(":", 1)[0]

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> None:
        self._server.start()

    def stop(self, grace_s: float = 1.0) -> None:
        """Stop serving (calls in flight get ``grace_s``), then end the worker threads: grpcio leaves the pool
        it was given running."""
        self._server.stop(grace_s).wait()
        self._executor.shutdown(wait=True)


def _handlers(backend: Backend) -> grpc.GenericRpcHandler:
    def server_live(request, context):
        return oip_grpc.ServerLiveResponse(live=True)

    def server_ready(request, context):
        return oip_grpc.ServerReadyResponse(ready=bool(backend.ready()))

    def server_metadata(request, context):
        _authorize(backend, context)
        doc = backend.server_metadata()
        return oip_grpc.ServerMetadataResponse(name=doc["name"], version=doc["version"], extensions=doc["extensions"])

    def model_ready(request, context):
        _authorize(backend, context)
        backend.model_ready(request.name, request.version)
        return oip_grpc.ModelReadyResponse(ready=True)

    def model_metadata(request, context):
        _authorize(backend, context)
        return oip_grpc.encode_model_metadata(backend.model_metadata(request.name, request.version))

    def model_infer(request, context):
        _authorize(backend, context)
        try:
            decoded = oip_grpc.decode_infer_request(request)
        except MessageError as exc:
            raise ScoringError(400, str(exc)) from None
        scored = backend.infer(request.model_name, request.model_version, decoded, request.ByteSize())
        try:
            return oip_grpc.encode_infer_response(scored.model_name, scored.model_version, scored.outputs,
                                                  id=scored.id, parameters=scored.parameters)
        except MessageError as exc:
            raise ScoringError(500, f"model output cannot be encoded: {exc}") from None

    functions = {"ServerLive": server_live, "ServerReady": server_ready, "ServerMetadata": server_metadata,
                 "ModelReady": model_ready, "ModelMetadata": model_metadata, "ModelInfer": model_infer}
    return grpc.method_handlers_generic_handler(oip_grpc.SERVICE, {
        name: grpc.unary_unary_rpc_method_handler(_mapped(function), request_deserializer=request_cls.FromString,
                                                  response_serializer=response_cls.SerializeToString)
        for name, function in functions.items() for request_cls, response_cls in [oip_grpc.METHODS[name]]})


def _authorize(backend: Backend, context: grpc.ServicerContext) -> None:
    backend.authorize({key: value for key, value in context.invocation_metadata() if isinstance(value, str)})


def _mapped(function: Callable) -> Callable:
    """``function`` with ScoringError as a gRPC status and message; anything else: INTERNAL, logged."""

    def call(request, context):
        try:
            return function(request, context)
        except ScoringError as exc:
            if "Retry-After" in exc.headers:
                context.set_trailing_metadata((("retry-after", exc.headers["Retry-After"]),))
            context.abort(STATUS_CODES.get(exc.status, grpc.StatusCode.UNKNOWN), str(exc))
        except Exception as exc:  # noqa: BLE001 - one request must never take the server down
            log.exception("gRPC %s failed", getattr(function, "__name__", "call"))
            context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}")

    return call
