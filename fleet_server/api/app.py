"""The FastAPI application: routers under ``/api``, token auth, errors as ``{"detail": "..."}``.

:func:`create_app` with only a config owns its :class:`~fleet_server.fleet.Fleet`:
its lifespan starts the MQTT side (embedded broker or external link) and
closes everything at shutdown. The runner and tests may pass a ``fleet``
they manage themselves; the app then leaves its lifecycle alone.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from fleet_protocol.canonical import check_json_bounds
from fleet_protocol.errors import BadDataError, EdgefleetError, MessageError

from ..audit import AuditMiddleware, redact_access_log
from ..config import ServerConfig
from ..dashboard import install as install_dashboard
from ..errors import ConflictError, NotFoundError, TooLargeError
from ..fleet import Fleet
from .deps import authorize, require_admin
from .http_metrics import HttpMetrics
from .routes import (audit, bundles, captures, content, deployments, devices, drift, enroll, enrollments, feedback,
                     groups, health, inference, install, jobs, keys, metrics, models, rollouts, telemetry, tokens,
                     wheels)

log = logging.getLogger(__name__)
_STATUS = ((NotFoundError, 404), (ConflictError, 409), (TooLargeError, 413), (BadDataError, 400))
_MULTIPART_OVERHEAD_BYTES = 1024 * 1024


def create_app(config: ServerConfig, *, fleet: Fleet | None = None) -> FastAPI:
    owned = fleet is None

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if owned:
            app.state.fleet.start_mqtt()
        try:
            yield
        finally:
            if owned:
                app.state.fleet.close()

    app = FastAPI(title="edgefleet fleet server", version="0.1.0", lifespan=lifespan,
                  description="Model registry, signed bundles, devices, deployments and telemetry. "
                              "Every route except GET /api/health, GET /install.sh and GET /wheels/ needs "
                              "`Authorization: Bearer <token>`: reads "
                              "need a viewer token, changes an operator token, keys and tokens an admin token.")
    app.state.fleet = fleet if fleet is not None else Fleet(config)
    app.add_middleware(_BodyLimit, limit_bytes=config.max_upload_bytes + _MULTIPART_OVERHEAD_BYTES)
    app.add_middleware(AuditMiddleware, db_of=lambda: app.state.fleet.db)
    app.add_middleware(HttpMetrics, metrics_of=lambda: app.state.fleet.metrics)  # last added: outermost
    redact_access_log()
    _add_error_handlers(app)
    app.include_router(health.router, prefix="/api")
    for module in (models, bundles, devices, deployments, rollouts, groups, jobs, telemetry, audit, feedback, drift,
                   captures, enrollments):
        app.include_router(module.router, prefix="/api", dependencies=[Depends(authorize)])
    app.include_router(tokens.router, prefix="/api", dependencies=[Depends(require_admin)])
    app.include_router(keys.router, prefix="/api", dependencies=[Depends(require_admin)])
    app.include_router(enroll.public, prefix="/api")  # the one-time enrollment token is its authentication
    app.include_router(inference.public)  # Open Inference Protocol v2 at /v2 (cloud scoring)
    app.include_router(inference.router)
    app.include_router(metrics.router)  # GET /metrics (Prometheus), any valid token
    app.include_router(install.router)  # GET /install.sh and the wheel mirror: public, like the dashboard's files
    app.include_router(wheels.router)
    app.include_router(content.router)  # GET /content/...: encrypted chunks by keyed id, public (see the module)
    install_dashboard(app)  # last: it mounts the dashboard at "/", which catches every path not matched above
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(EdgefleetError)
    async def edgefleet_error(request: Request, exc: EdgefleetError) -> JSONResponse:
        status = next((code for kind, code in _STATUS if isinstance(exc, kind)), 500)
        if status == 500:
            log.error("unexpected %s on %s %s: %s", type(exc).__name__, request.method, request.url.path, exc)
            return JSONResponse({"detail": "internal error; see the server log"}, status_code=500)
        return JSONResponse({"detail": str(exc)}, status_code=status)

    @app.exception_handler(OverflowError)
    async def number_out_of_range(request: Request, exc: OverflowError) -> JSONResponse:
        # SQLite stores 64-bit integers: an id or version beyond that cannot exist.
        return JSONResponse({"detail": f"not found: a number in {request.url.path} is out of range"}, status_code=404)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
            where = "body" if not where or where.isdigit() else where
            message = error.get("msg", "invalid")
            if error.get("type") == "json_invalid":  # say what is wrong and where, as the MQTT side does
                reason, at = error.get("ctx", {}).get("error", "not JSON"), error.get("loc", ("?",))[-1]
                message += f": {reason} at character {at}"
            problems.append(f"{where}: {message}")
        return JSONResponse({"detail": "invalid request: " + "; ".join(problems)}, status_code=422)


class _BodyLimit:
    """Bound request bodies before any route reads them.

    A declared length over the limit is refused (413) before a byte is read. A JSON body on ``/api`` is read
    here (up to the limit) and checked by :func:`~fleet_protocol.canonical.check_json_bounds` before FastAPI's
    ``json.loads`` recurses into it, so a deeply nested body is refused (400) with the reason an MQTT message
    would get, not "There was an error parsing the body". ``/v2`` (Open Inference Protocol) parses its own
    bodies through the same entry point and answers in its own error format.
    """

    def __init__(self, app, *, limit_bytes: int):
        self.app = app
        self.limit_bytes = limit_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            length = headers.get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.limit_bytes:
                await self._too_large(scope, receive, send)
                return
            if scope["path"].startswith("/api/") and _is_json(headers.get(b"content-type", b"")):
                body = await _read_body(receive, self.limit_bytes + 1)
                if len(body) > self.limit_bytes:
                    await self._too_large(scope, receive, send)
                    return
                try:
                    check_json_bounds(body, what="the request body", max_bytes=self.limit_bytes)
                except MessageError as exc:
                    await JSONResponse({"detail": str(exc)}, status_code=400)(scope, receive, send)
                    return
                receive = _replay(body, receive)
        await self.app(scope, receive, send)

    async def _too_large(self, scope, receive, send) -> None:
        response = JSONResponse({"detail": f"the request body is larger than the server's limit of "
                                           f"{self.limit_bytes} bytes"}, status_code=413)
        await response(scope, receive, send)


def _is_json(content_type: bytes) -> bool:
    """Whether FastAPI would parse a body of this type as JSON (``application/json`` or ``application/*+json``)."""
    kind = content_type.split(b";", 1)[0].strip().lower()
    return kind == b"application/json" or (kind.startswith(b"application/") and kind.endswith(b"+json"))


async def _read_body(receive, at_most: int) -> bytes:
    """The request body, or its first ``at_most`` bytes or more when it is longer."""
    chunks, size = [], 0
    while size < at_most:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive):
    """A ``receive`` that hands the app ``body`` (already read) first, then whatever the client sends next."""
    sent = False

    async def replay():
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
