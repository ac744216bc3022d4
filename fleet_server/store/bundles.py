"""Bundles: one row per signed manifest, named by its digest.

The row keeps the signed manifest envelope exactly as it was signed; the
files themselves are chunks in the chunk store.
"""

from __future__ import annotations

from sqlalchemy import func, insert, select

from ._json import dumps, loads
from .db import Database
from .schema import bundles


def _decode(row: dict) -> dict:
    envelope = loads(row["envelope"])
    signed = envelope["signed"]
    return {
        "digest": row["digest"], "module": row["module"], "version": row["version"],
        "model_name": row["model_name"], "model_version": row["model_version"],
        "model_ref": signed.get("model_ref"), "size": row["size"],
        "files": [{"path": f["path"], "size": f["size"], "sha256": f["sha256"]} for f in signed["files"]],
        "created": row["created"], "envelope": envelope,
    }


def next_version(*, db: Database, module: str) -> int:
    """The version the next bundle of ``module`` gets; call it in the transaction that inserts that bundle (it
    locks the module's numbering until that transaction ends)."""
    with db.transaction() as conn:
        db.lock(conn, "bundles", module)
        current = conn.execute(select(func.coalesce(func.max(bundles.c.version), 0))
                               .where(bundles.c.module == module)).scalar_one()
    return current + 1


def insert_bundle(*, db: Database, digest: str, module: str, version: int, model_name: str | None,
                  model_version: int | None, size: int, envelope: dict, created: str) -> dict:
    row = {"digest": digest, "module": module, "version": version, "model_name": model_name,
           "model_version": model_version, "size": size, "envelope": dumps(envelope), "created": created}
    with db.transaction() as conn:
        conn.execute(insert(bundles).values(row))
    return _decode(row)


def get_bundle(*, db: Database, digest: str) -> dict | None:
    row = db.row(select(bundles).where(bundles.c.digest == digest))
    return _decode(row) if row else None


def get_by_version(*, db: Database, module: str, version: int | None = None) -> dict | None:
    """Bundle ``version`` of ``module``, or its newest when ``version`` is None."""
    query = select(bundles).where(bundles.c.module == module)
    if version is not None:
        query = query.where(bundles.c.version == version)
    row = db.row(query.order_by(bundles.c.version.desc()).limit(1))
    return _decode(row) if row else None


def list_bundles(*, db: Database, module: str | None = None) -> list[dict]:
    query = select(bundles)
    if module:
        query = query.where(bundles.c.module == module)
    return [_decode(r) for r in db.rows(query.order_by(bundles.c.module, bundles.c.version))]


def digests_built_from(*, db: Database, model_name: str, model_version: int) -> list[str]:
    return [r["digest"] for r in db.rows(select(bundles.c.digest).where(
        bundles.c.model_name == model_name, bundles.c.model_version == model_version))]
