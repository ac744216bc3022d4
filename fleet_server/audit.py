"""Who changed what, when: the audit trail of the API, and keeping secrets out of the access log.

:class:`AuditMiddleware` (pure ASGI) records every ``/api`` request that
changes something (any method but GET, HEAD, OPTIONS) and that an API token
authorised: who (the token's *name*, never the token), what (method and route
template, e.g. ``POST /api/devices/{device_id}/revoke``), the concrete target
path, the object acted on and the response status.

The object is a small JSON map: the route's path parameters, named for what
they are (``{"model": "iris", "version": 3}``, ``{"token": "ci"}``,
``{"device_id": "cam-1"}``, ``{"rollout_id": 4, "action": "pause"}``), plus
what a route adds with :func:`note` as it learns it: the version a
registration created, the deployment or rollout id it made, the devices
it targets, the tags it changed. A refused request keeps what was noted
before the refusal, so the attempt is named too. Refused requests (4xx) are recorded too, so a
probing token leaves a trace; requests without a valid token are not (there
is no one to name). The token's identity and the route template reach the middleware
through ``scope["state"]``, set by :mod:`fleet_server.api.deps`.
Changes made without an API token (a device enrolling with its one-time
token) are recorded by their route through :func:`record`.

:func:`redact_access_log` strips query strings from uvicorn's access log:
the dashboard's event stream takes its token as ``?token=``.
"""

from __future__ import annotations

import logging

from fleet_protocol.fields import is_ascii_decimal
from fleet_protocol.timestamps import to_iso

from .clock import utc_now
from .store import Database
from .store import audit as audit_store

log = logging.getLogger(__name__)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def record(db: Database, *, actor: str, action: str, target: str, status: int = 200,
           object: dict | None = None) -> None:  # noqa: A002 - the audit entry's field is called object
    audit_store.append(db=db, ts=to_iso(utc_now()), actor=actor, action=action, target=target, status=status,
                       object=object or {})


class AuditLog:
    """Reading the audit log (oldest first, paged by id); entries are only ever appended, by :func:`record` and
    :class:`AuditMiddleware`. Built by the fleet."""

    def __init__(self, *, db: Database):
        self._db = db

    def entries(self, *, after_id: int, actor: str | None, limit: int) -> list[dict]:
        return audit_store.list_entries(db=self._db, after_id=after_id, actor=actor, limit=limit)


def note(request, **fields) -> None:
    """Add ``fields`` (ids, names, versions; no secrets) to the object of the request's audit entry."""
    state = request.scope.setdefault("state", {})
    state.setdefault("audit_object", {}).update({k: v for k, v in fields.items() if v is not None})


def path_object(template: str, params: dict[str, str]) -> dict:
    """The path parameters, ``{name}`` called after its collection: ``/api/tokens/{name}`` → ``{"token": ...}``."""
    parts = template.split("/")
    found = {}
    for key, value in params.items():
        if key == "name" and "{name}" in parts[1:]:
            collection = parts[parts.index("{name}") - 1]
            key = collection[:-1] if collection.endswith("s") else collection
        found[key] = int(value) if key in _NUMERIC and is_ascii_decimal(str(value)) else value
    return found


_NUMERIC = {"version", "deployment_id", "rollout_id", "job_id"}


class AuditMiddleware:
    """Append an audit entry for each authorised change as its response starts (so it is there before the
    client sees the answer); never alters the response."""

    def __init__(self, app, *, db_of):
        self.app = app
        self.db_of = db_of  # () -> Database; the fleet is attached to the app after the middleware is built

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS or not scope["path"].startswith("/api/"):
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})  # shared with the request's copies of the scope
        recorded = False

        def note(status_code: int) -> None:
            nonlocal recorded
            principal = state.get("principal")
            if recorded or principal is None:
                return
            recorded = True
            template = state.get("route_template") or scope["path"]
            try:
                record(self.db_of(), actor=principal.name, action=f"{scope['method']} {template}",
                       target=scope["path"], status=status_code, object=state.get("audit_object"))
            except Exception:  # the change is done; a failed audit write must be loud, not fatal
                log.exception("could not write the audit entry for %s %s", scope["method"], scope["path"])

        async def send_and_note(message):
            if message["type"] == "http.response.start":
                note(message["status"])  # before the client sees the answer
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except Exception:
            note(500)
            raise


class _RedactQuery(logging.Filter):
    """uvicorn.access records carry ``(client, method, path with query, http version, status)``: drop the query
    string (tokens), and successful readiness checks (``GET /api/ready``) altogether."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 5 and args[2] == "/api/ready" and args[4] == 200:
            return False  # a load balancer's health check, several times a second: noise
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], args[2].split("?", 1)[0] + "?…", *args[3:])
        return True


def redact_access_log() -> None:
    """Install the query-string filter on uvicorn's access logger (once)."""
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _RedactQuery) for f in logger.filters):
        logger.addFilter(_RedactQuery())
