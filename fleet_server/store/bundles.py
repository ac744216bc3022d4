"""Bundles: one row per signed manifest, named by its digest.

The row keeps the signed manifest envelope exactly as it was signed; the
files themselves are chunks in the chunk store.
"""

from __future__ import annotations

from ._json import dumps, loads
from .db import Database


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
    (current,) = db.connection().execute(
        "SELECT COALESCE(MAX(version), 0) FROM bundles WHERE module = ?", [module]).fetchone()
    return current + 1


def insert_bundle(*, db: Database, digest: str, module: str, version: int, model_name: str | None,
                  model_version: int | None, size: int, envelope: dict, created: str) -> dict:
    row = {"digest": digest, "module": module, "version": version, "model_name": model_name,
           "model_version": model_version, "size": size, "envelope": dumps(envelope), "created": created}
    with db.transaction() as tx:
        tx["bundles"].insert(row)
    return _decode(row)


def get_bundle(*, db: Database, digest: str) -> dict | None:
    rows = list(db.connection()["bundles"].rows_where("digest = ?", [digest]))
    return _decode(rows[0]) if rows else None


def get_by_version(*, db: Database, module: str, version: int | None = None) -> dict | None:
    """Bundle ``version`` of ``module``, or its newest when ``version`` is None."""
    where, params = ("module = ?", [module]) if version is None else ("module = ? AND version = ?", [module, version])
    rows = list(db.connection()["bundles"].rows_where(where, params, order_by="version DESC", limit=1))
    return _decode(rows[0]) if rows else None


def list_bundles(*, db: Database, module: str | None = None) -> list[dict]:
    where, params = ("module = ?", [module]) if module else (None, [])
    return [_decode(r) for r in db.connection()["bundles"].rows_where(where, params, order_by="module, version")]


def digests_built_from(*, db: Database, model_name: str, model_version: int) -> list[str]:
    return [r["digest"] for r in db.connection()["bundles"].rows_where(
        "model_name = ? AND model_version = ?", [model_name, model_version], select="digest")]
