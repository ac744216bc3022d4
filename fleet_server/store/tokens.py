"""API tokens, stored only as SHA-256 hashes of the token text."""

from __future__ import annotations

import hashlib
import hmac

from .db import Database


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def count_tokens(*, db: Database, role: str) -> int:
    return db.connection()["api_tokens"].count_where("role = ?", [role])


def add_token(*, db: Database, token: str, name: str, role: str, created: str) -> None:
    with db.transaction() as tx:
        tx["api_tokens"].insert({"token_hash": hash_token(token), "name": name, "role": role, "created": created})


def token_role(*, db: Database, token: str) -> str | None:
    """The role of ``token``, or None when it is not a known token."""
    wanted = hash_token(token)
    rows = db.connection().execute("SELECT token_hash, role FROM api_tokens WHERE token_hash = ?", [wanted]).fetchall()
    for token_hash, role in rows:
        if hmac.compare_digest(token_hash, wanted):
            return role
    return None
