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

from sqlalchemy import func, insert, select, update

from ._json import dumps, field_text, loads
from .db import Database
from .schema import bundle_transfers, deployments, telemetry


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
    with db.transaction() as conn:
        row["id"] = conn.execute(insert(deployments).values(row)).inserted_primary_key[0]
    return _decode(row)


def get_deployment(*, db: Database, deployment_id: int) -> dict | None:
    row = db.row(select(deployments).where(deployments.c.id == deployment_id))
    return _decode(row) if row else None


def list_deployments(*, db: Database, module: str | None = None) -> list[dict]:
    query = select(deployments)
    if module:
        query = query.where(deployments.c.module == module)
    return [_decode(r) for r in db.rows(query.order_by(deployments.c.id))]


def deployments_of_bundles(*, db: Database, digests: list[str]) -> list[dict]:
    if not digests:
        return []
    return [_decode(r) for r in db.rows(select(deployments).where(deployments.c.bundle_digest.in_(digests))
                                        .order_by(deployments.c.id))]


def _set(db: Database, deployment_id: int, **values) -> None:
    with db.transaction() as conn:
        conn.execute(update(deployments).where(deployments.c.id == deployment_id).values(**values))


def set_admitted(*, db: Database, deployment_id: int, admitted: list[str] | None) -> None:
    """The devices a rollout lets in so far (None: every targeted device)."""
    _set(db, deployment_id, admitted=dumps(admitted))


def withdraw(*, db: Database, deployment_id: int) -> None:
    _set(db, deployment_id, withdrawn=1)


def model_stats_since(*, db: Database, module: str, device_ids: list[str], since: str) -> list[dict]:
    """``model_stats`` telemetry of ``module`` from these devices, recorded at or after ``since`` (for A/B)."""
    if not device_ids:
        return []
    rows = db.rows(select(telemetry.c.device_id, telemetry.c.data).where(
        telemetry.c.kind == "model_stats", telemetry.c.received >= since, telemetry.c.device_id.in_(device_ids),
        field_text(telemetry.c.data, "model") == module))
    return [{"device_id": row["device_id"], **loads(row["data"])} for row in rows]


def claim_decision(*, db: Database, deployment_id: int, decided: dict) -> bool:
    """Record the end of an A/B comparison unless one is recorded already (then False)."""
    with db.transaction() as conn:
        return conn.execute(update(deployments).where(deployments.c.id == deployment_id,
                                                      deployments.c.decided.is_(None))
                            .values(decided=dumps(decided))).rowcount == 1


def set_decision(*, db: Database, deployment_id: int, decided: dict | None) -> None:
    _set(db, deployment_id, decided=dumps(decided))


def record_transfer(*, db: Database, bundle_digest: str, device_id: str, chunks: dict[str, int]) -> None:
    """Chunks a device asked for (each counted once, however often it asks again)."""
    db.insert_new(bundle_transfers, [{"bundle_digest": bundle_digest, "device_id": device_id, "chunk": c,
                                      "size": size} for c, size in chunks.items()])


def bytes_requested(*, db: Database, bundle_digest: str) -> dict[str, int]:
    """Bytes of ``bundle_digest`` each device asked for, by device id."""
    with db.read() as conn:
        rows = conn.execute(select(bundle_transfers.c.device_id, func.sum(bundle_transfers.c.size))
                            .where(bundle_transfers.c.bundle_digest == bundle_digest)
                            .group_by(bundle_transfers.c.device_id)).all()
    return {device_id: int(total) for device_id, total in rows}
