"""Typed dependencies for the routes: the services they call and who may do what.

A route declares each service it uses as a parameter typed with one of the
aliases below (``registry: RegistryDep``); each is the instance the
:class:`~fleet_server.fleet.Fleet` of the app built (the composition root),
so a route never sees the fleet, the store or another service's parts (only
the server's own health checks take :data:`FleetDep`).

Every route under ``/api`` except ``GET /api/health``, ``GET /api/ready`` and ``POST /api/enroll``
needs ``Authorization: Bearer <token>``: no token or an unknown one is 401, a
token whose role is too low is 403. Roles (:mod:`fleet_server.tokens`):

- :func:`authorize`: the default for resource routers: reads (GET, HEAD)
  need ``viewer``, anything that changes the fleet needs ``operator``;
- :func:`require_viewer`: any valid token for any method (POSTs that change nothing);
- :func:`require_operator`: operator for any method;
- :func:`require_admin`: admin (keys, tokens).

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

from ..audit import SAFE_METHODS, AuditLog, note, path_object
from ..bundler import Bundler
from ..changes import Changes
from ..cloud_scoring import CloudScoring
from ..config import ServerConfig
from ..content import BundleContent
from ..deployments import Deployments
from ..device_install.wheel_mirror import WheelMirror
from ..devices import Devices
from ..drift.service import Drift
from ..enrollment import Enrollments
from ..feedback import Feedback
from ..fleet import Fleet
from ..jobs import JobController
from ..trust import TrustRoot
from ..metrics import ServerMetrics
from ..pipeline.service import ModelPipeline
from ..registry import Registry
from ..revocation import Revocation
from ..rollouts import RolloutController
from ..telemetry import Telemetry
from ..tokens import ADMIN, OPERATOR, VIEWER, Tokens, role_allows
from ..variants import Variants

_bearer = HTTPBearer(auto_error=False, description="An API token: the admin token printed at the server's first "
                                                   "start, or one made with `edgefleet token create`")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's name and role (never the token)."""

    name: str
    role: str


def _fleet(request: Request) -> Fleet:
    return request.app.state.fleet


def _audit(request: Request) -> AuditLog:
    return _fleet(request).audit


def _bundler(request: Request) -> Bundler:
    return _fleet(request).bundler


def _changes(request: Request) -> Changes:
    return _fleet(request).changes


def _cloud(request: Request) -> CloudScoring:
    return _fleet(request).cloud


def _config(request: Request) -> ServerConfig:
    return _fleet(request).config


def _deployments(request: Request) -> Deployments:
    return _fleet(request).deployments


def _devices(request: Request) -> Devices:
    return _fleet(request).devices


def _drift(request: Request) -> Drift:
    return _fleet(request).drift


def _enrollments(request: Request) -> Enrollments:
    return _fleet(request).enrollments


def _feedback(request: Request) -> Feedback:
    return _fleet(request).feedback


def _jobs(request: Request) -> JobController:
    return _fleet(request).jobs


def _metrics(request: Request) -> ServerMetrics:
    return _fleet(request).metrics


def _pipeline(request: Request) -> ModelPipeline:
    return _fleet(request).pipeline


def _registry(request: Request) -> Registry:
    return _fleet(request).registry


def _revocation(request: Request) -> Revocation:
    return _fleet(request).revocation


def _rollouts(request: Request) -> RolloutController:
    return _fleet(request).rollouts


def _telemetry(request: Request) -> Telemetry:
    return _fleet(request).telemetry


def _tokens(request: Request) -> Tokens:
    return _fleet(request).tokens


def _trust(request: Request) -> TrustRoot:
    return _fleet(request).trust


def _variants(request: Request) -> Variants:
    return _fleet(request).variants


def _content(request: Request) -> BundleContent:
    return _fleet(request).content


def _wheels(request: Request) -> WheelMirror:
    return _fleet(request).wheels


FleetDep = Annotated[Fleet, Depends(_fleet)]  # the server itself: only for its own health, which no service owns
AuditDep = Annotated[AuditLog, Depends(_audit)]
BundlerDep = Annotated[Bundler, Depends(_bundler)]
ChangesDep = Annotated[Changes, Depends(_changes)]
CloudDep = Annotated[CloudScoring, Depends(_cloud)]
ContentDep = Annotated[BundleContent, Depends(_content)]
ConfigDep = Annotated[ServerConfig, Depends(_config)]
DeploymentsDep = Annotated[Deployments, Depends(_deployments)]
DevicesDep = Annotated[Devices, Depends(_devices)]
DriftDep = Annotated[Drift, Depends(_drift)]
EnrollmentsDep = Annotated[Enrollments, Depends(_enrollments)]
FeedbackDep = Annotated[Feedback, Depends(_feedback)]
JobsDep = Annotated[JobController, Depends(_jobs)]
MetricsDep = Annotated[ServerMetrics, Depends(_metrics)]
PipelineDep = Annotated[ModelPipeline, Depends(_pipeline)]
RegistryDep = Annotated[Registry, Depends(_registry)]
RevocationDep = Annotated[Revocation, Depends(_revocation)]
RolloutsDep = Annotated[RolloutController, Depends(_rollouts)]
TelemetryDep = Annotated[Telemetry, Depends(_telemetry)]
TokensDep = Annotated[Tokens, Depends(_tokens)]
TrustDep = Annotated[TrustRoot, Depends(_trust)]
VariantsDep = Annotated[Variants, Depends(_variants)]
WheelsDep = Annotated[WheelMirror, Depends(_wheels)]
CredentialsDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def authenticate(tokens: Tokens, credentials: HTTPAuthorizationCredentials | None) -> Principal:
    """The token's principal; 401 when there is no token or it is not known."""
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "an API token is required: send "
                            "'Authorization: Bearer <token>'", headers={"WWW-Authenticate": "Bearer"})
    identity = tokens.identity(credentials.credentials)
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


def _require(request: Request, tokens: Tokens, credentials, needed: str) -> Principal:
    principal = authenticate(tokens, credentials)
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


def authorize(request: Request, tokens: TokensDep, credentials: CredentialsDep) -> Principal:
    """Reads need viewer; changes need operator."""
    return _require(request, tokens, credentials, VIEWER if request.method in SAFE_METHODS else OPERATOR)


def require_viewer(request: Request, tokens: TokensDep, credentials: CredentialsDep) -> Principal:
    """Any valid token, whatever the method (e.g. scoring: a POST that changes nothing)."""
    return _require(request, tokens, credentials, VIEWER)


def require_operator(request: Request, tokens: TokensDep, credentials: CredentialsDep) -> Principal:
    return _require(request, tokens, credentials, OPERATOR)


def require_admin(request: Request, tokens: TokensDep, credentials: CredentialsDep) -> Principal:
    return _require(request, tokens, credentials, ADMIN)

