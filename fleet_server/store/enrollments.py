"""One-time enrollment tokens (stored as SHA-256 hashes) and the device certificates the CA issued."""

from __future__ import annotations

from ._json import dumps, loads
from .db import Database
from .tokens import hash_token


def add_enrollment(*, db: Database, token: str, device_id: str, tags: dict[str, str], created: str,
                   expires: str) -> None:
    with db.transaction() as tx:
        tx["enrollments"].insert({"token_hash": hash_token(token), "device_id": device_id, "tags": dumps(tags),
                                  "created": created, "expires": expires, "used": None})


def get_enrollment(*, db: Database, token: str) -> dict | None:
    rows = list(db.connection()["enrollments"].rows_where("token_hash = ?", [hash_token(token)]))
    return {**rows[0], "tags": loads(rows[0]["tags"], {})} if rows else None


def claim_enrollment(*, db: Database, token: str, now: str) -> bool:
    """Mark the token used; False when it was used (or expired) meanwhile. One caller wins."""
    with db.transaction() as tx:
        cursor = tx.execute("UPDATE enrollments SET used = ? WHERE token_hash = ? AND used IS NULL AND expires > ?",
                            [now, hash_token(token), now])
        return cursor.rowcount == 1


def add_certificate(*, db: Database, serial: int, device_id: str, not_after: str, issued: str,
                    public_key: str | None = None) -> None:
    """``public_key``: the certificate's key (PEM), what bundle content keys are wrapped for."""
    with db.transaction() as tx:
        tx["device_certificates"].insert({"serial": str(serial), "device_id": device_id, "not_after": not_after,
                                          "issued": issued, "revoked": None, "public_key": public_key})


def certificates(*, db: Database, device_id: str) -> list[dict]:
    """A device's certificates, newest first; ``serial`` as an int."""
    rows = db.connection()["device_certificates"].rows_where("device_id = ?", [device_id], order_by="issued DESC")
    return [{**row, "serial": int(row["serial"])} for row in rows]


def mark_revoked(*, db: Database, device_id: str, now: str) -> list[int]:
    """Mark every unrevoked certificate of the device revoked; their serials."""
    with db.transaction() as tx:
        serials = [int(s) for (s,) in tx.execute(
            "SELECT serial FROM device_certificates WHERE device_id = ? AND revoked IS NULL", [device_id])]
        tx.execute("UPDATE device_certificates SET revoked = ? WHERE device_id = ? AND revoked IS NULL",
                   [now, device_id])
    return serials


def is_revoked(*, db: Database, device_id: str) -> bool:
    """True when the device has certificates and every one of them is revoked."""
    row = db.connection().execute(
        "SELECT COUNT(*), SUM(revoked IS NULL) FROM device_certificates WHERE device_id = ?", [device_id]).fetchone()
    return bool(row[0]) and not row[1]
