"""Typed dependencies for the routes: the fleet core and the admin check.

Every route under ``/api`` except ``GET /api/health`` depends on
:data:`AdminDep`: ``Authorization: Bearer <token>`` with a known admin token,
else 401. Tokens are compared by their SHA-256 hash only.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..fleet import Fleet
from ..keys import ADMIN_ROLE
from ..store import tokens as token_store

_bearer = HTTPBearer(auto_error=False, description="The admin API token printed at the server's first start")


def get_fleet(request: Request) -> Fleet:
    return request.app.state.fleet


FleetDep = Annotated[Fleet, Depends(get_fleet)]


def require_admin(fleet: FleetDep,
                  credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> str:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "an API token is required: send "
                            "'Authorization: Bearer <token>'", headers={"WWW-Authenticate": "Bearer"})
    if token_store.token_role(db=fleet.db, token=credentials.credentials) != ADMIN_ROLE:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "the API token is not valid",
                            headers={"WWW-Authenticate": "Bearer"})
    return ADMIN_ROLE


AdminDep = Annotated[str, Depends(require_admin)]
