"""API latency for the metrics: a pure ASGI middleware timing each HTTP request.

Each request is observed once, when the app is done with it, into
``edgefleet_http_request_duration_seconds`` (:class:`~fleet_server.metrics.ServerMetrics`)
by method, route template and status. The route is the template of the API
route that answered (``/api/devices/{device_id}``, ``/v2/models/{name}/infer``),
never the concrete path, and ``other`` for anything else (the dashboard's
files, unknown paths, requests refused before routing), so the label set
stays as small as the API whatever clients send; the audit log names
routes the same way (:func:`~fleet_server.api.deps.route_template`). It runs outermost, so refusals by the
other middlewares (413, 400) are timed too.
The dashboard's event stream is timed over its whole life. It changes
nothing in the request or the response.
"""

from __future__ import annotations

import time

from .deps import route_template

OTHER = "other"


class HttpMetrics:
    def __init__(self, app, *, metrics_of):
        self.app = app
        self.metrics_of = metrics_of  # () -> ServerMetrics; the fleet is attached after the middleware is built

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client sees when the app raises before answering

        async def send_noting_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            self.metrics_of().observe_http(scope["method"], route_template(scope) or OTHER, status,
                                           time.perf_counter() - started)
