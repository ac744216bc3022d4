"""API tokens and their roles: which role may do what, and minting new tokens; no HTTP.

Three roles, each including the one below it::

    viewer    read everything (GET)
    operator  change the fleet: upload, build, deploy, pause, revoke, enroll devices
    admin     manage trust: signing keys and API tokens

A token is ``secrets.token_urlsafe(32)``; only its SHA-256 hash is stored
(:mod:`fleet_server.store.tokens`). Its plaintext exists once, in the return
value of :meth:`Tokens.create_token`, for the API to hand back at creation.
"""

from __future__ import annotations

import secrets

from fleet_protocol.errors import BadDataError
from fleet_protocol.fields import NAME
from fleet_protocol.timestamps import to_iso

from .clock import utc_now
from .errors import ConflictError, NotFoundError
from .store import Database
from .store import tokens as token_store

VIEWER, OPERATOR, ADMIN = "viewer", "operator", "admin"
ROLES = (VIEWER, OPERATOR, ADMIN)  # lowest first


def role_allows(role: str, needed: str) -> bool:
    """True when a token with ``role`` may do what needs ``needed``."""
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)


class Tokens:
    """The API tokens in the store; built by the fleet."""

    def __init__(self, *, db: Database):
        self._db = db

    def create_token(self, *, name: str, role: str, token: str | None = None) -> tuple[str, dict]:
        """Mint and store a token; ``(plaintext, public record)``. Names are unique (they name the actor in the
        audit log)."""
        if role not in ROLES:
            raise BadDataError(f"role {role!r} is not one of {', '.join(ROLES)}")
        if not NAME.fullmatch(name):
            raise BadDataError(f"token name {name!r} must be lowercase letters, digits, '.', '_' or '-' "
                               "(up to 64, starting with a letter or digit)")
        plaintext = token or secrets.token_urlsafe(32)
        if not token_store.add_token(db=self._db, token=plaintext, name=name, role=role, created=to_iso(utc_now())):
            raise ConflictError(f"a token named {name!r} already exists")
        return plaintext, token_store.get_token(db=self._db, name=name)

    def list_tokens(self) -> list[dict]:
        """Every token's public record (name, role, created; never the token)."""
        return token_store.list_tokens(db=self._db)

    def identity(self, token: str) -> tuple[str, str] | None:
        """``(name, role)`` of a presented token, or None when it is not known (compared by SHA-256 only)."""
        return token_store.token_identity(db=self._db, token=token)

    def delete_token(self, *, name: str) -> None:
        """Revoke a token at once; the last admin token cannot go (nobody could manage tokens after it)."""
        record = token_store.get_token(db=self._db, name=name)
        if record is None:
            raise NotFoundError(f"there is no token named {name!r}")
        if record["role"] == ADMIN and token_store.count_tokens(db=self._db, role=ADMIN) <= 1:
            raise ConflictError(f"{name!r} is the last admin token; create another admin token first")
        token_store.delete_token(db=self._db, name=name)
