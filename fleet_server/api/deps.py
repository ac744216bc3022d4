"""Typed dependencies for the routes: the fleet core and who may do what.

Every route under ``/api`` except ``GET /api/health`` and ``POST /api/enroll``
needs ``Authorization: Bearer <token>``: no token or an unknown one is 401, a
token whose role is too low is 403. Roles (:mod:`fleet_server.tokens`):

- :func:`authorize`: the default for resource routers: reads (GET, HEAD)
  need ``viewer``, anything that changes the fleet needs ``operator``;
- :func:`require_viewer`: any valid token for any method (POSTs that change nothing);
- :func:`require_operator` / :data:`OperatorDep`: operator for any method;
- :func:`require_admin` / :data:`AdminDep`: admin (keys, tokens).

Each check puts the caller's :class:`Principal`, the route template and the
path parameters (the start of the entry's object) in ``request.state`` for the
audit log (:mod:`fleet_server.audit`). Tokens are compared by their
SHA-256 hash only and never logged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..audit import SAFE_METHODS, note, path_object
from ..fleet import Fleet
from ..store import tokens as token_store
from ..tokens import ADMIN, OPERATOR, VIEWER, role_allows

_bearer = HTTPBearer(auto_error=False, description="An API token: the admin token printed at the server's first "
                                                   "start, or one made with `edgefleet token create`")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's name and role (never the token)."""

    name: str
    role: str


def get_fleet(request: Request) -> Fleet:
    return request.app.state.fleet


FleetDep = Annotated[Fleet, Depends(get_fleet)]
CredentialsDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def authenticate(fleet: Fleet, credentials: HTTPAuthorizationCredentials | None) -> Principal:
    """The token's principal; 401 when there is no token or it is not known."""
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "an API token is required: send "
                            "'Authorization: Bearer <token>'", headers={"WWW-Authenticate": "Bearer"})
    identity = token_store.token_identity(db=fleet.db, token=credentials.credentials)
    if identity is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "the API token is not valid",
                            headers={"WWW-Authenticate": "Bearer"})
    return Principal(*identity)


def check_role(principal: Principal, needed: str) -> Principal:
    """403 unless the principal's role includes ``needed``."""
    if not role_allows(principal.role, needed):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"this needs a token with the {needed} role; "
                                                       f"token {principal.name!r} is {principal.role}")
    return principal


def _require(request: Request, fleet: Fleet, credentials, needed: str) -> Principal:
    principal = authenticate(fleet, credentials)
    request.state.principal = principal
    request.state.route_template = route_template(request.scope) or request.url.path
    note(request, **path_object(request.state.route_template, request.path_params))
    return check_role(principal, needed)


def route_template(scope) -> str | None:
    """``/api/devices/{device_id}`` for a request FastAPI routed to that API route, else None (no API route).

    Read from the route itself, never from the concrete path, so a parameter that equals a path segment (a device
    called ``devices``) stays a parameter. The route's own path is behind the prefix it was included with, and
    that prefix is the concrete path's leading segments (no API route takes a ``{x:path}`` parameter).
    """
    route = scope.get("route")  # FastAPI puts the API route it picked on the request's scope
    if not isinstance(route, APIRoute):
        return None
    own = route.path.strip("/").split("/")
    concrete = scope["path"].strip("/").split("/")
    return "/" + "/".join(concrete[:len(concrete) - len(own)] + own)


def authorize(request: Request, fleet: FleetDep, credentials: CredentialsDep) -> Principal:
    """Reads need viewer; changes need operator."""
    return _require(request, fleet, credentials, VIEWER if request.method in SAFE_METHODS else OPERATOR)


def require_viewer(request: Request, fleet: FleetDep, credentials: CredentialsDep) -> Principal:
    """Any valid token, whatever the method (e.g. scoring: a POST that changes nothing)."""
    return _require(request, fleet, credentials, VIEWER)


def require_operator(request: Request, fleet: FleetDep, credentials: CredentialsDep) -> Principal:
    return _require(request, fleet, credentials, OPERATOR)


def require_admin(request: Request, fleet: FleetDep, credentials: CredentialsDep) -> Principal:
    return _require(request, fleet, credentials, ADMIN)


AuthorizedDep = Annotated[Principal, Depends(authorize)]
OperatorDep = Annotated[Principal, Depends(require_operator)]
AdminDep = Annotated[Principal, Depends(require_admin)]
