"""The cloud client's gRPC transport: one ModelInfer call to the fleet server's gRPC port (``grpc://host:port``).

Used by :class:`~edge_agent.cloud_client.CloudClient` when ``cloud_url`` is
``grpc://`` (or ``grpcs://``, TLS with the system's roots); the client keeps
the one retry policy and circuit breaker. :meth:`GrpcTransport.send` answers
``(HTTP-like status, payload)`` like the HTTP transport: 200 and the response
bytes, or the status REST would have given with ``{"error": ...}``; a
connection that fails (UNAVAILABLE, DEADLINE_EXCEEDED) is a TransportError.
Loaded through :func:`edgefleet_runtime.grpc_extra.load` (needs grpcio).
"""

from __future__ import annotations

import json
import threading

import grpc

from fleet_protocol import oip, oip_grpc
from fleet_protocol.canonical import parse_json_object
from fleet_protocol.errors import MessageError, TransportError

# gRPC status -> the HTTP status the REST route gives for the same failure (5xx are retried, 4xx are not)
HTTP_STATUS = {grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.FAILED_PRECONDITION: 400,
               grpc.StatusCode.UNAUTHENTICATED: 401, grpc.StatusCode.PERMISSION_DENIED: 403,
               grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.RESOURCE_EXHAUSTED: 413,
               grpc.StatusCode.UNIMPLEMENTED: 501}
MAX_RECONNECT_BACKOFF_MS = 5_000
UNREACHABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)


class GrpcTransport:
    def __init__(self, target: str, *, tls: bool, token: str | None, timeout_s: float, max_response_bytes: int):
        self.target = target
        self._tls = tls
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._timeout_s = timeout_s
        # grpcio backs off reconnecting up to 120 s: the cloud back after an outage would wait that long, and the
        # breaker's trial in the meantime fail at once and open it again. Capped, the channel tries every 5 s.
        self._options = [("grpc.max_receive_message_length", max_response_bytes),
                         ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS)]
        self._lock = threading.Lock()
        self._channel: grpc.Channel | None = None
        self._call = None

    def send(self, model: str, version: int | str | None, body: bytes, *, module: bool) -> tuple[int, bytes]:
        try:
            request = oip.decode_request(parse_json_object(body, what="request body", max_bytes=len(body)))
        except MessageError as exc:
            return 400, _error(str(exc))
        if module:
            request.parameters = {**request.parameters, oip_grpc.MODULE_PARAMETER: True}
        message = oip_grpc.encode_infer_request(model, version, request)
        try:
            response = self._stub()(message, timeout=self._timeout_s, metadata=self._metadata)
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details() or ""
            if code in UNREACHABLE:
                raise TransportError(f"cloud scoring at grpc://{self.target} is unreachable: {code.name}: {details}",
                                     code="cloud_unreachable") from None
            return HTTP_STATUS.get(code, 500), _error(f"{code.name}: {details}")
        return 200, response.SerializeToString()

    @staticmethod
    def decode(data: bytes) -> dict:
        """The OIP response document of a ModelInferResponse; MessageError when it does not decode."""
        try:
            return oip_grpc.decode_infer_response(oip_grpc.ModelInferResponse.FromString(data))
        except MessageError:
            raise
        except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and friends, at the boundary
            raise MessageError(f"cloud scoring's gRPC answer does not decode: {type(exc).__name__}") from None

    def close(self) -> None:
        """Close the channel (its connection to the cloud); a later :meth:`send` opens a new one."""
        with self._lock:
            channel, self._channel, self._call = self._channel, None, None
        if channel is not None:
            channel.close()

    def _stub(self):
        with self._lock:
            if self._call is None:
                if self._tls:
                    channel = grpc.secure_channel(self.target, grpc.ssl_channel_credentials(), self._options)
                else:
                    channel = grpc.insecure_channel(self.target, self._options)
                self._channel = channel
                request_cls, response_cls = oip_grpc.METHODS["ModelInfer"]
                self._call = channel.unary_unary(f"/{oip_grpc.SERVICE}/ModelInfer",
                                                 request_serializer=request_cls.SerializeToString,
                                                 response_deserializer=response_cls.FromString)
            return self._call


def _error(message: str) -> bytes:
    return json.dumps({"error": message}).encode()
