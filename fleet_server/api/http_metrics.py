"""API latency for the metrics: a pure ASGI middleware timing each HTTP request.

Each request is observed once, when the app is done with it, into
``edgefleet_http_request_duration_seconds`` (:class:`~fleet_server.metrics.ServerMetrics`)
by method, route template and status. The route is the template of the API
route that answered (``/api/devices/{device_id}``, ``/v2/models/{name}/infer``),
never the concrete path, and ``other`` for anything else (the dashboard's
files, unknown paths, requests refused before routing), so the label set
stays as small as the API whatever clients send. The template is the
route's own path behind the router prefix it was included with, which is
the concrete path's leading segments (no API route takes a ``{x:path}``
parameter, so the counts line up). It runs outermost, so refusals by the
other middlewares (413, 400) are timed too.
The dashboard's event stream is timed over its whole life. It changes
nothing in the request or the response.
"""

from __future__ import annotations

import time

from fastapi.routing import APIRoute

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
            self.metrics_of().observe_http(scope["method"], route_template(scope), status,
                                           time.perf_counter() - started)


def route_template(scope) -> str:
    """``/api/devices/{device_id}`` for a request FastAPI routed to that API route; :data:`OTHER` otherwise."""
    route = scope.get("route")  # FastAPI puts the API route it picked on the request's scope
    if not isinstance(route, APIRoute):
        return OTHER
    own = route.path.strip("/").split("/")
    concrete = scope["path"].strip("/").split("/")
    prefix = concrete[:len(concrete) - len(own)]
    return "/" + "/".join(prefix + own)
