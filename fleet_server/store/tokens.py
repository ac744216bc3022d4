"""API tokens, stored only as SHA-256 hashes of the token text, with a unique name and a role."""

from __future__ import annotations

import hashlib
import hmac

from .db import Database

_PUBLIC = "name, role, created"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def count_tokens(*, db: Database, role: str) -> int:
    return db.connection()["api_tokens"].count_where("role = ?", [role])


def add_token(*, db: Database, token: str, name: str, role: str, created: str) -> bool:
    """Store a token's hash; False when the name is taken."""
    with db.transaction() as tx:
        if tx.execute("SELECT 1 FROM api_tokens WHERE name = ?", [name]).fetchone():
            return False
        tx["api_tokens"].insert({"token_hash": hash_token(token), "name": name, "role": role, "created": created})
    return True


def get_token(*, db: Database, name: str) -> dict | None:
    """A token's public record (name, role, created); never its hash."""
    row = db.connection().execute(f"SELECT {_PUBLIC} FROM api_tokens WHERE name = ?", [name]).fetchone()
    return dict(zip(("name", "role", "created"), row)) if row else None


def list_tokens(*, db: Database) -> list[dict]:
    rows = db.connection().execute(f"SELECT {_PUBLIC} FROM api_tokens ORDER BY created, name").fetchall()
    return [dict(zip(("name", "role", "created"), row)) for row in rows]


def delete_token(*, db: Database, name: str) -> None:
    with db.transaction() as tx:
        tx.execute("DELETE FROM api_tokens WHERE name = ?", [name])


def token_identity(*, db: Database, token: str) -> tuple[str, str] | None:
    """``(name, role)`` of ``token``, or None when it is not a known token."""
    wanted = hash_token(token)
    rows = db.connection().execute("SELECT token_hash, name, role FROM api_tokens WHERE token_hash = ?",
                                   [wanted]).fetchall()
    for token_hash, name, role in rows:
        if hmac.compare_digest(token_hash, wanted):
            return name, role
    return None


def token_role(*, db: Database, token: str) -> str | None:
    """The role of ``token``, or None when it is not a known token."""
    identity = token_identity(db=db, token=token)
    return identity[1] if identity else None
