"""Deployments: a bundle aimed at a list of devices and/or a tag selector, with a priority.

``admitted`` is None for a plain deployment (every targeted device) and the
list of devices a staged rollout has let in so far otherwise; ``withdrawn``
marks a deployment an operator rolled back (it targets nothing any more).
``split`` (A/B) is ``{"weight": w, "variants": [{version, bundle_digest,
weight}]}``: other versions served beside the deployment's own, by weight.
``fit`` is the fit table computed at creation (:func:`fleet_server.pipeline.gate.fit_table`:
the gate's limits and, per firmware profile, what stops the model running there).
``decided`` (A/B) is the comparison frozen at promote (:mod:`fleet_server.variants`).
"""

from __future__ import annotations

from ._json import dumps, loads
from .db import Database


def _decode(row: dict) -> dict:
    return {"id": row["id"], "module": row["module"], "version": row["version"],
            "bundle_digest": row["bundle_digest"],
            "target": {"devices": loads(row["devices"]), "selector": loads(row["selector"])},
            "priority": row["priority"], "admitted": loads(row["admitted"]), "withdrawn": bool(row["withdrawn"]),
            "split": loads(row["split"]), "fit": loads(row.get("fit")), "decided": loads(row.get("decided")),
            "created": row["created"]}


def insert_deployment(*, db: Database, module: str, version: int, bundle_digest: str, devices: list[str] | None,
                      selector: dict[str, str] | None, created: str, priority: int = 0,
                      admitted: list[str] | None = None, split: dict | None = None, fit: dict | None = None) -> dict:
    row = {"module": module, "version": version, "bundle_digest": bundle_digest, "devices": dumps(devices),
           "selector": dumps(selector), "created": created, "priority": priority, "admitted": dumps(admitted),
           "withdrawn": 0, "split": dumps(split), "fit": dumps(fit)}
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


def set_admitted(*, db: Database, deployment_id: int, admitted: list[str] | None) -> None:
    """The devices a rollout lets in so far (None: every targeted device)."""
    with db.transaction() as tx:
        tx.execute("UPDATE deployments SET admitted = ? WHERE id = ?", [dumps(admitted), deployment_id])


def withdraw(*, db: Database, deployment_id: int) -> None:
    with db.transaction() as tx:
        tx.execute("UPDATE deployments SET withdrawn = 1 WHERE id = ?", [deployment_id])


def model_stats_since(*, db: Database, module: str, device_ids: list[str], since: str) -> list[dict]:
    """``model_stats`` telemetry of ``module`` from these devices, recorded at or after ``since`` (for A/B)."""
    if not device_ids:
        return []
    marks = ", ".join("?" for _ in device_ids)
    rows = db.connection().execute(
        f"SELECT device_id, data FROM telemetry WHERE kind = 'model_stats' AND received >= ? "
        f"AND device_id IN ({marks}) AND json_extract(data, '$.model') = ?", [since, *device_ids, module]).fetchall()
    return [{"device_id": device_id, **loads(data)} for device_id, data in rows]


def claim_decision(*, db: Database, deployment_id: int, decided: dict) -> bool:
    """Record the end of an A/B comparison unless one is recorded already (then False)."""
    with db.transaction() as tx:
        return tx.execute("UPDATE deployments SET decided = ? WHERE id = ? AND decided IS NULL",
                          [dumps(decided), deployment_id]).rowcount == 1


def set_decision(*, db: Database, deployment_id: int, decided: dict | None) -> None:
    with db.transaction() as tx:
        tx.execute("UPDATE deployments SET decided = ? WHERE id = ?", [dumps(decided), deployment_id])


def record_transfer(*, db: Database, bundle_digest: str, device_id: str, chunks: dict[str, int]) -> None:
    """Chunks a device asked for (each counted once, however often it asks again)."""
    if chunks:
        with db.transaction() as tx:
            tx.conn.executemany("INSERT OR IGNORE INTO bundle_transfers (bundle_digest, device_id, chunk, size) "
                           "VALUES (?, ?, ?, ?)", [(bundle_digest, device_id, c, size) for c, size in chunks.items()])


def bytes_requested(*, db: Database, bundle_digest: str) -> dict[str, int]:
    """Bytes of ``bundle_digest`` each device asked for, by device id."""
    rows = db.connection().execute("SELECT device_id, SUM(size) FROM bundle_transfers WHERE bundle_digest = ? "
                                   "GROUP BY device_id", [bundle_digest]).fetchall()
    return dict(rows)
