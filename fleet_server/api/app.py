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

from fleet_protocol.errors import BadDataError, EdgefleetError

from ..config import ServerConfig
from ..dashboard import install as install_dashboard
from ..errors import ConflictError, NotFoundError, TooLargeError
from ..fleet import Fleet
from .deps import require_admin
from .routes import bundles, deployments, devices, health, models, telemetry

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
                              "Every route except GET /api/health needs `Authorization: Bearer <token>`.")
    app.state.fleet = fleet if fleet is not None else Fleet(config)
    app.add_middleware(_BodyLimit, limit_bytes=config.max_upload_bytes + _MULTIPART_OVERHEAD_BYTES)
    _add_error_handlers(app)
    app.include_router(health.router, prefix="/api")
    for module in (models, bundles, devices, deployments, telemetry):
        app.include_router(module.router, prefix="/api", dependencies=[Depends(require_admin)])
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

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
            where = "body" if not where or where.isdigit() else where
            problems.append(f"{where}: {error.get('msg', 'invalid')}")
        return JSONResponse({"detail": "invalid request: " + "; ".join(problems)}, status_code=422)


class _BodyLimit:
    """Refuse a request whose declared body is over the limit before reading any of it (413)."""

    def __init__(self, app, *, limit_bytes: int):
        self.app = app
        self.limit_bytes = limit_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            length = dict(scope.get("headers") or []).get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.limit_bytes:
                response = JSONResponse({"detail": f"the request body is larger than the server's limit of "
                                                   f"{self.limit_bytes} bytes"}, status_code=413)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
