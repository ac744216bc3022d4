"""Cloud scoring over the Open Inference Protocol v2 (KServe v2 / Triton HTTP): ``/v2/...``.

    GET  /v2                                       server metadata
    GET  /v2/health/live | /v2/health/ready         no token needed (like GET /api/health)
    GET  /v2/models/{name}[/versions/{v}]           model metadata (loads the model); without a version, a
                                                   module of that name with an entry script answers, as its
                                                   devices do (its signature, its outputs)
    GET  /v2/models/{name}[/versions/{v}]/ready
    POST /v2/models/{name}[/versions/{v}]/infer     ``parameters``: scored_on, accelerator, model_version;
                                                   ``id``: the request's, or one assigned (for feedback)
    POST /v2/models/{name}/feedback                 labels for a request scored here (:mod:`fleet_server.feedback`)
    GET  /v2/modules/{name}/versions/{v}             a module's bundle version, as an agent runs it
    POST /v2/modules/{name}/versions/{v}/infer       (entry script included): a device's cloud fallback

Bodies are JSON, or JSON plus raw tensor bytes (the binary tensor data
extension, :mod:`fleet_protocol.oip_binary`, announced in ``GET /v2``): binary
outputs come back when the request asks for them. The same models answer over
gRPC when ``grpc_port`` is set (:mod:`fleet_server.grpc_scoring`).

Every other route needs ``Authorization: Bearer <token>`` of any role
(viewer is enough: scoring changes nothing; give devices a viewer token as
their ``cloud_token``), checked with :mod:`fleet_server.api.deps`. Errors are
``{"error": "..."}`` (what Triton and KServe clients read), not the
``{"detail": ...}`` of ``/api``: 400 bad input with the reason (the input's
name and what the model expects), 401 no or bad token, 404 unknown model or
version, 413 body over ``cloud_max_request_bytes``, 500 the model, the entry
script or the server failed on inputs that fit (503 with ``Retry-After`` when
temporary): clients retry those.
Scoring runs in the thread pool; the models live in
:class:`~fleet_server.cloud_scoring.CloudScoring`.
"""

from __future__ import annotations

from typing import Callable

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from edgefleet_runtime.feedback import RecentRequests
from edgefleet_runtime.inputs import ModuleError
from fleet_protocol import oip, oip_binary
from fleet_protocol.canonical import parse_json_object
from fleet_protocol.errors import BadDataError, EdgefleetError
from fleet_protocol.fields import is_ascii_decimal


from ...cloud_scoring import CloudModel, CloudScoring
from ...config import ServerConfig
from ...errors import NotFoundError, TooLargeError
from ...tokens import VIEWER
from ..deps import CloudDep, ConfigDep, CredentialsDep, FeedbackDep, FleetDep, Principal, TokensDep, authenticate, \
    check_role

SERVER_NAME = "edgefleet-server"


class OipRoute(APIRoute):
    """Turns every failure of a ``/v2`` route into ``{"error": "..."}`` with its status."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except HTTPException as exc:
                return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)
            except RequestValidationError as exc:
                return JSONResponse({"error": f"invalid request: {exc.errors()}"}, status_code=400)
            except ModuleError as exc:
                if exc.temporary:
                    return JSONResponse({"error": str(exc)}, status_code=503, headers={"Retry-After": "1"})
                return JSONResponse({"error": str(exc)}, status_code=500)
            except (NotFoundError, BadDataError, TooLargeError) as exc:
                status = 404 if isinstance(exc, NotFoundError) else 413 if isinstance(exc, TooLargeError) else 400
                return JSONResponse({"error": str(exc)}, status_code=status)
            except EdgefleetError as exc:  # e.g. a model file no accelerator can load
                return JSONResponse({"error": f"{exc.code}: {exc}"}, status_code=500)

        return route


def require_scoring(request: Request, tokens: TokensDep, credentials: CredentialsDep) -> Principal:
    """Any known token: scoring reads the registry and changes nothing, so viewer is enough."""
    principal = authenticate(tokens, credentials)
    request.state.principal = principal
    return check_role(principal, VIEWER)


public = APIRouter(prefix="/v2", tags=["inference"], route_class=OipRoute)
router = APIRouter(prefix="/v2", tags=["inference"], route_class=OipRoute, dependencies=[Depends(require_scoring)])


@public.get("/health/live")
def live() -> dict:
    return {"live": True}


@public.get("/health/ready")
def ready(fleet: FleetDep) -> dict:
    fleet.db.ping()
    return {"ready": True}


@router.get("")
def server_metadata(request: Request) -> dict:
    return {"name": SERVER_NAME, "version": request.app.version, "extensions": [oip_binary.EXTENSION]}


def _version(version: str | None) -> int | None:
    if version is None:
        return None
    if not is_ascii_decimal(version):
        raise NotFoundError(f"model version {version!r} is not a registered version number")
    return int(version)


def _model(cloud: CloudScoring, name: str, version: str | None) -> CloudModel:
    return cloud.model(name, _version(version))


@router.get("/models/{name}")
@router.get("/models/{name}/versions/{version}")
def model_metadata(cloud: CloudDep, name: str, version: str | None = None) -> dict:
    model = _model(cloud, name, version)
    return model.metadata(cloud.versions(model))


@router.get("/models/{name}/ready")
@router.get("/models/{name}/versions/{version}/ready")
def model_ready(cloud: CloudDep, name: str, version: str | None = None) -> dict:
    model = _model(cloud, name, version)
    return {"name": model.name, "version": str(model.version), "ready": True}


@router.post("/models/{name}/infer")
@router.post("/models/{name}/versions/{version}/infer")
async def infer(cloud: CloudDep, config: ConfigDep, request: Request, name: str,
                version: str | None = None) -> Response:
    body = await _body(config, request)
    return await run_in_threadpool(_score, lambda: _model(cloud, name, version), body,
                                   request.headers.get(oip_binary.HEADER), cloud.recent)


@router.post("/models/{name}/feedback")
async def model_feedback(feedback: FeedbackDep, config: ConfigDep, request: Request, name: str) -> dict:
    body = await _body(config, request)
    return await run_in_threadpool(
        feedback.receive, name, parse_json_object(body, what="request body", max_bytes=len(body)))


@router.get("/modules/{name}/versions/{version}")
def module_metadata(cloud: CloudDep, name: str, version: str) -> dict:
    module = _module(cloud, name, version)
    return module.metadata([module.version])


@router.post("/modules/{name}/versions/{version}/infer")
async def infer_module(cloud: CloudDep, config: ConfigDep, request: Request, name: str, version: str) -> Response:
    body = await _body(config, request)
    return await run_in_threadpool(_score, lambda: _module(cloud, name, version), body,
                                   request.headers.get(oip_binary.HEADER))


def _module(cloud: CloudScoring, name: str, version: str) -> CloudModel:
    if not is_ascii_decimal(version):
        raise NotFoundError(f"module version {version!r} is not a bundle version number")
    return cloud.module(name, int(version))


async def _body(config: ServerConfig, request: Request) -> bytes:
    limit = config.cloud_max_request_bytes
    length = request.headers.get("content-length")
    if length is not None and is_ascii_decimal(length) and int(length) > limit:
        raise TooLargeError(f"request body of {length} bytes is more than the {limit} allowed")
    body = await request.body()
    if len(body) > limit:
        raise TooLargeError(f"request body of {len(body)} bytes is more than the {limit} allowed")
    return body


def _score(get_model: Callable[[], CloudModel], body: bytes, binary_header: str | None,
           recent: RecentRequests | None = None) -> Response:
    """Score; with ``recent``, remember the request (and answer with its id) for feedback."""
    request = oip_binary.decode_request(body, binary_header)  # its size is checked by _body
    scored = get_model().answer(request, recent)
    binary = request.binary_outputs(list(scored.outputs))
    if not binary:
        return JSONResponse(oip.encode_response(scored.model_name, scored.model_version, scored.outputs,
                                                id=scored.id, parameters=scored.parameters))
    data, header_length = oip_binary.encode_response(scored.model_name, scored.model_version, scored.outputs,
                                                     binary=binary, id=scored.id, parameters=scored.parameters)
    return Response(data, media_type="application/octet-stream", headers={oip_binary.HEADER: str(header_length)})
