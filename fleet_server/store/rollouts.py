"""Staged rollouts, their append-only history, and named device groups.

A rollout row holds its plan, its state, the device ids let in wave by wave
(``waves``, a list of lists) and when the current wave started; the
controller rewrites it as it advances. ``rollout_events`` only ever gets
inserts: triggers (both engines) refuse an UPDATE or DELETE, so the history is
immutable.
"""

from __future__ import annotations

from sqlalchemy import func, insert, select, update

from ._json import dumps, loads
from .db import Database
from .schema import device_groups, rollout_events, rollouts


def _decode(row: dict) -> dict:
    return {**row, "plan": loads(row["plan"]), "waves": loads(row["waves"], [])}


def insert_rollout(*, db: Database, deployment_id: int, plan: dict, created: str) -> dict:
    row = {"deployment_id": deployment_id, "plan": dumps(plan), "state": "running", "waves": "[]",
           "wave_started": None, "acknowledged_failures": 0, "reason": None, "created": created, "updated": created}
    with db.transaction() as conn:
        row["id"] = conn.execute(insert(rollouts).values(row)).inserted_primary_key[0]
    return _decode(row)


def get_rollout(*, db: Database, rollout_id: int) -> dict | None:
    row = db.row(select(rollouts).where(rollouts.c.id == rollout_id))
    return _decode(row) if row else None


def list_rollouts(*, db: Database, states: tuple[str, ...] | None = None) -> list[dict]:
    query = select(rollouts)
    if states:
        query = query.where(rollouts.c.state.in_(states))
    return [_decode(r) for r in db.rows(query.order_by(rollouts.c.id))]


def count_by_state(*, db: Database) -> dict[str, int]:
    """``{state: rollouts}`` for the states some rollout is in (for /metrics)."""
    with db.read() as conn:
        return dict(conn.execute(select(rollouts.c.state, func.count()).group_by(rollouts.c.state)).all())


def update_rollout(*, db: Database, rollout_id: int, updated: str, **values) -> None:
    """Set any of ``state``, ``waves``, ``wave_started``, ``acknowledged_failures``, ``reason``."""
    if "waves" in values:
        values["waves"] = dumps(values["waves"])
    with db.transaction() as conn:
        conn.execute(update(rollouts).where(rollouts.c.id == rollout_id).values(**values, updated=updated))


def add_event(*, db: Database, rollout_id: int, ts: str, kind: str, actor: str, detail: dict) -> None:
    with db.transaction() as conn:
        conn.execute(insert(rollout_events).values(rollout_id=rollout_id, ts=ts, kind=kind, actor=actor,
                                                   detail=dumps(detail)))


def events(*, db: Database, rollout_id: int) -> list[dict]:
    rows = db.rows(select(rollout_events).where(rollout_events.c.rollout_id == rollout_id)
                   .order_by(rollout_events.c.id))
    return [{**r, "detail": loads(r["detail"], {})} for r in rows]


# --- groups ------------------------------------------------------------------------------------


def put_group(*, db: Database, name: str, devices: list[str] | None, selector: dict[str, str] | None,
              created: str) -> bool:
    """Create a group; False when one with this name exists."""
    with db.transaction() as conn:
        return conn.execute(db.insert_ignoring(device_groups).values(
            name=name, devices=dumps(devices), selector=dumps(selector), created=created)).rowcount == 1


def _group(row: dict) -> dict:
    return {"name": row["name"], "devices": loads(row["devices"]), "selector": loads(row["selector"]),
            "created": row["created"]}


def get_group(*, db: Database, name: str) -> dict | None:
    row = db.row(select(device_groups).where(device_groups.c.name == name))
    return _group(row) if row else None


def list_groups(*, db: Database) -> list[dict]:
    return [_group(r) for r in db.rows(select(device_groups).order_by(device_groups.c.name))]
