"""Staged rollouts, their append-only history, and named device groups.

A rollout row holds its plan, its state, the device ids let in wave by wave
(``waves``, a list of lists) and when the current wave started; the
controller rewrites it as it advances. ``rollout_events`` only ever gets
inserts: SQLite triggers refuse an UPDATE or DELETE, so the history is
immutable.
"""

from __future__ import annotations

from ._json import dumps, loads
from .db import Database


def _decode(row: dict) -> dict:
    return {**row, "plan": loads(row["plan"]), "waves": loads(row["waves"], [])}


def insert_rollout(*, db: Database, deployment_id: int, plan: dict, created: str) -> dict:
    row = {"deployment_id": deployment_id, "plan": dumps(plan), "state": "running", "waves": "[]",
           "wave_started": None, "acknowledged_failures": 0, "reason": None, "created": created, "updated": created}
    with db.transaction() as tx:
        row["id"] = tx["rollouts"].insert(row).last_pk
    return _decode(row)


def get_rollout(*, db: Database, rollout_id: int) -> dict | None:
    rows = list(db.connection()["rollouts"].rows_where("id = ?", [rollout_id]))
    return _decode(rows[0]) if rows else None


def list_rollouts(*, db: Database, states: tuple[str, ...] | None = None) -> list[dict]:
    where, params = None, []
    if states:
        where, params = f"state IN ({', '.join('?' for _ in states)})", list(states)
    return [_decode(r) for r in db.connection()["rollouts"].rows_where(where, params, order_by="id")]


def update_rollout(*, db: Database, rollout_id: int, updated: str, **values) -> None:
    """Set any of ``state``, ``waves``, ``wave_started``, ``acknowledged_failures``, ``reason``."""
    if "waves" in values:
        values["waves"] = dumps(values["waves"])
    columns = ", ".join(f"{k} = ?" for k in values)
    with db.transaction() as tx:
        tx.execute(f"UPDATE rollouts SET {columns}, updated = ? WHERE id = ?", [*values.values(), updated, rollout_id])


def add_event(*, db: Database, rollout_id: int, ts: str, kind: str, actor: str, detail: dict) -> None:
    with db.transaction() as tx:
        tx["rollout_events"].insert({"rollout_id": rollout_id, "ts": ts, "kind": kind, "actor": actor,
                                     "detail": dumps(detail)})


def events(*, db: Database, rollout_id: int) -> list[dict]:
    rows = db.connection()["rollout_events"].rows_where("rollout_id = ?", [rollout_id], order_by="id")
    return [{**r, "detail": loads(r["detail"], {})} for r in rows]


# --- groups ------------------------------------------------------------------------------------


def put_group(*, db: Database, name: str, devices: list[str] | None, selector: dict[str, str] | None,
              created: str) -> bool:
    """Create a group; False when one with this name exists."""
    with db.transaction() as tx:
        cursor = tx.execute("INSERT OR IGNORE INTO device_groups (name, devices, selector, created) VALUES (?, ?, ?, ?)",
                            [name, dumps(devices), dumps(selector), created])
        return cursor.rowcount == 1


def get_group(*, db: Database, name: str) -> dict | None:
    rows = list(db.connection()["device_groups"].rows_where("name = ?", [name]))
    if not rows:
        return None
    row = rows[0]
    return {"name": row["name"], "devices": loads(row["devices"]), "selector": loads(row["selector"]),
            "created": row["created"]}


def list_groups(*, db: Database) -> list[dict]:
    names = [r["name"] for r in db.connection()["device_groups"].rows_where(order_by="name")]
    return [get_group(db=db, name=n) for n in names]
