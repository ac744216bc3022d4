"""One-time enrollment tokens (stored as SHA-256 hashes) and the device certificates the CA issued."""

from __future__ import annotations

from sqlalchemy import case, func, insert, select, update

from ._json import dumps, loads
from .db import Database
from .schema import device_certificates, enrollments
from .tokens import hash_token

_certs = device_certificates.c


def add_enrollment(*, db: Database, token: str, device_id: str, tags: dict[str, str], created: str,
                   expires: str) -> None:
    with db.transaction() as conn:
        conn.execute(insert(enrollments).values(token_hash=hash_token(token), device_id=device_id, tags=dumps(tags),
                                                created=created, expires=expires, used=None))


def get_enrollment(*, db: Database, token: str) -> dict | None:
    row = db.row(select(enrollments).where(enrollments.c.token_hash == hash_token(token)))
    return {**row, "tags": loads(row["tags"], {})} if row else None


def claim_enrollment(*, db: Database, token: str, now: str) -> bool:
    """Mark the token used; False when it was used (or expired) meanwhile. One caller wins."""
    with db.transaction() as conn:
        return conn.execute(update(enrollments).where(
            enrollments.c.token_hash == hash_token(token), enrollments.c.used.is_(None), enrollments.c.expires > now)
            .values(used=now)).rowcount == 1


def add_certificate(*, db: Database, serial: int, device_id: str, not_after: str, issued: str,
                    public_key: str | None = None) -> None:
    """``public_key``: the certificate's key (PEM), what bundle content keys are wrapped for."""
    with db.transaction() as conn:
        conn.execute(insert(device_certificates).values(serial=str(serial), device_id=device_id, not_after=not_after,
                                                        issued=issued, revoked=None, public_key=public_key))


def certificates(*, db: Database, device_id: str) -> list[dict]:
    """A device's certificates, newest first; ``serial`` as an int."""
    rows = db.rows(select(device_certificates).where(_certs.device_id == device_id).order_by(_certs.issued.desc()))
    return [{**row, "serial": int(row["serial"])} for row in rows]


def mark_revoked(*, db: Database, device_id: str, now: str) -> list[int]:
    """Mark every unrevoked certificate of the device revoked; their serials."""
    with db.transaction() as conn:
        serials = conn.execute(update(device_certificates)
                               .where(_certs.device_id == device_id, _certs.revoked.is_(None))
                               .values(revoked=now).returning(_certs.serial)).scalars().all()
    return sorted(int(s) for s in serials)


def is_revoked(*, db: Database, device_id: str) -> bool:
    """True when the device has certificates and every one of them is revoked."""
    with db.read() as conn:
        total, valid = conn.execute(select(func.count(), func.coalesce(func.sum(
            case((_certs.revoked.is_(None), 1), else_=0)), 0)).where(_certs.device_id == device_id)).one()
    return bool(total) and not valid
