"""API tokens, stored only as SHA-256 hashes of the token text, with a unique name and a role."""

from __future__ import annotations

import hashlib
import hmac

from sqlalchemy import delete, func, select

from .db import Database
from .schema import api_tokens

_PUBLIC = (api_tokens.c.name, api_tokens.c.role, api_tokens.c.created)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def count_tokens(*, db: Database, role: str) -> int:
    return db.scalar(select(func.count()).select_from(api_tokens).where(api_tokens.c.role == role))


def add_token(*, db: Database, token: str, name: str, role: str, created: str) -> bool:
    """Store a token's hash; False when the name is taken (the unique name index decides between racers)."""
    with db.transaction() as conn:
        return conn.execute(db.insert_ignoring(api_tokens).values(
            token_hash=hash_token(token), name=name, role=role, created=created)).rowcount == 1


def get_token(*, db: Database, name: str) -> dict | None:
    """A token's public record (name, role, created); never its hash."""
    return db.row(select(*_PUBLIC).where(api_tokens.c.name == name))


def list_tokens(*, db: Database) -> list[dict]:
    return db.rows(select(*_PUBLIC).order_by(api_tokens.c.created, api_tokens.c.name))


def delete_token(*, db: Database, name: str) -> None:
    with db.transaction() as conn:
        conn.execute(delete(api_tokens).where(api_tokens.c.name == name))


def token_identity(*, db: Database, token: str) -> tuple[str, str] | None:
    """``(name, role)`` of ``token``, or None when it is not a known token."""
    wanted = hash_token(token)
    for row in db.rows(select(api_tokens.c.token_hash, *_PUBLIC[:2]).where(api_tokens.c.token_hash == wanted)):
        if hmac.compare_digest(row["token_hash"], wanted):
            return row["name"], row["role"]
    return None


def token_role(*, db: Database, token: str) -> str | None:
    """The role of ``token``, or None when it is not a known token."""
    identity = token_identity(db=db, token=token)
    return identity[1] if identity else None
