"""Cloud scoring over gRPC: the Open Inference Protocol service on ``grpc_port`` (needs ``edgefleet[grpc]``).

The same models as the REST ``/v2`` routes (:mod:`fleet_server.api.routes.inference`),
answered by the same :meth:`~fleet_server.cloud_scoring.CloudModel.answer`; the
service itself is the agent's (:mod:`edgefleet_runtime.grpc_api`). Every RPC but
ServerLive and ServerReady needs the metadata ``authorization: Bearer <token>``
of any role (UNAUTHENTICATED / PERMISSION_DENIED otherwise). A device's
fallback asks for a module's bundle (entry script included, as REST's
``/v2/modules/{name}/versions/{v}``) with the request parameter
``edgefleet_module: true`` and the bundle version as ``model_version``.
Errors map as REST's statuses do: 400 INVALID_ARGUMENT, 404 NOT_FOUND, 413
RESOURCE_EXHAUSTED, 500 INTERNAL, 503 UNAVAILABLE.
"""

from __future__ import annotations

from typing import Callable, TypeVar

from fastapi import HTTPException
from fastapi.security import HTTPAuthorizationCredentials

from edgefleet_runtime import grpc_extra
from edgefleet_runtime.inputs import ModuleError
from edgefleet_runtime.scored import Scored, ScoringError
from fleet_protocol.errors import BadDataError, EdgefleetError
from fleet_protocol.fields import is_ascii_decimal
from fleet_protocol.oip import InferenceRequest
from fleet_protocol.oip_binary import EXTENSION
from fleet_protocol.oip_grpc import MODULE_PARAMETER

from .api.deps import authenticate, check_role
from .errors import NotFoundError, TooLargeError
from .tokens import VIEWER

T = TypeVar("T")


class CloudBackend:
    """What :class:`edgefleet_runtime.grpc_api.GrpcServer` asks, answered from the fleet's cloud scoring."""

    def __init__(self, fleet, *, version: str):
        self.fleet = fleet
        self.version = version

    def authorize(self, metadata: dict[str, str]) -> None:
        scheme, _, token = metadata.get("authorization", "").partition(" ")
        credentials = HTTPAuthorizationCredentials(scheme=scheme, credentials=token.strip()) if token else None
        try:
            check_role(authenticate(self.fleet.tokens, credentials), VIEWER)
        except HTTPException as exc:
            raise ScoringError(exc.status_code, str(exc.detail)) from None

    def ready(self) -> bool:
        self.fleet.db.ping()
        return True

    def server_metadata(self) -> dict:
        return {"name": "edgefleet-server", "version": self.version, "extensions": [EXTENSION]}  # as GET /v2

    def model_metadata(self, name: str, version: str) -> dict:
        def describe() -> dict:
            model = self.fleet.cloud.model(name, _version(version))
            return model.metadata(self.fleet.cloud.versions(model))

        return _mapped(describe)

    def model_ready(self, name: str, version: str) -> None:
        _mapped(lambda: self.fleet.cloud.model(name, _version(version)))

    def infer(self, name: str, version: str, request: InferenceRequest, request_bytes: int) -> Scored:
        if request.parameters.get(MODULE_PARAMETER) is True:
            if not is_ascii_decimal(version):
                raise ScoringError(404, f"module version {version!r} is not a bundle version number")
            return _mapped(lambda: self.fleet.cloud.module(name, int(version)).answer(request))
        return _mapped(lambda: self.fleet.cloud.model(name, _version(version)).answer(request, self.fleet.cloud.recent))


def start(fleet, *, host: str, port: int, version: str):
    """The started :class:`~edgefleet_runtime.grpc_api.GrpcServer`; GrpcUnavailable without the extra, OSError."""
    grpc_api = grpc_extra.load("grpc_port")
    server = grpc_api.GrpcServer(CloudBackend(fleet, version=version), host=host, port=port,
                                 max_request_bytes=fleet.config.cloud_max_request_bytes)
    server.start()
    return server


def _version(version: str) -> int | None:
    if not version:
        return None
    if not is_ascii_decimal(version):
        raise ScoringError(404, f"model version {version!r} is not a registered version number")
    return int(version)


def _mapped(call: Callable[[], T]) -> T:
    """``call()`` with the server's errors as the statuses REST gives them."""
    try:
        return call()
    except NotFoundError as exc:
        raise ScoringError(404, str(exc)) from None
    except TooLargeError as exc:
        raise ScoringError(413, str(exc)) from None
    except BadDataError as exc:
        raise ScoringError(400, str(exc)) from None
    except ModuleError as exc:
        raise ScoringError(503 if exc.temporary else 500, str(exc),
                           {"Retry-After": "1"} if exc.temporary else None) from None
    except EdgefleetError as exc:
        raise ScoringError(500, f"{exc.code}: {exc}") from None
