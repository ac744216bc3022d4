"""Deployments: a bundle aimed at a list of devices and/or a tag selector."""

from __future__ import annotations

from ._json import dumps, loads
from .db import Database


def _decode(row: dict) -> dict:
    return {"id": row["id"], "module": row["module"], "version": row["version"],
            "bundle_digest": row["bundle_digest"],
            "target": {"devices": loads(row["devices"]), "selector": loads(row["selector"])},
            "created": row["created"]}


def insert_deployment(*, db: Database, module: str, version: int, bundle_digest: str, devices: list[str] | None,
                      selector: dict[str, str] | None, created: str) -> dict:
    row = {"module": module, "version": version, "bundle_digest": bundle_digest, "devices": dumps(devices),
           "selector": dumps(selector), "created": created}
    with db.transaction() as tx:
        row["id"] = tx["deployments"].insert(row).last_pk
    return _decode(row)


def get_deployment(*, db: Database, deployment_id: int) -> dict | None:
    rows = list(db.connection()["deployments"].rows_where("id = ?", [deployment_id]))
    return _decode(rows[0]) if rows else None


def list_deployments(*, db: Database, module: str | None = None) -> list[dict]:
    where, params = ("module = ?", [module]) if module else (None, [])
    return [_decode(r) for r in db.connection()["deployments"].rows_where(where, params, order_by="id")]


def deployments_of_bundles(*, db: Database, digests: list[str]) -> list[dict]:
    if not digests:
        return []
    marks = ", ".join("?" for _ in digests)
    return [_decode(r) for r in db.connection()["deployments"].rows_where(
        f"bundle_digest IN ({marks})", digests, order_by="id")]
