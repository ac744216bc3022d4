"""Devices: identity, tags, last status and reported state, and the desired state last published."""

from __future__ import annotations

from ._json import dumps, loads, tag_filter_sql
from .db import Database


def _decode(row: dict) -> dict:
    return {**row, "tags": loads(row["tags"], {}), "reported": loads(row["reported"]),
            "desired_envelope": loads(row["desired_envelope"])}


def get_device(*, db: Database, device_id: str) -> dict | None:
    rows = list(db.connection()["devices"].rows_where("id = ?", [device_id]))
    return _decode(rows[0]) if rows else None


def list_devices(*, db: Database, status: str | None = None, tags: dict[str, str] | None = None) -> list[dict]:
    clauses, params = tag_filter_sql("tags", tags or {})
    if status is not None:
        clauses.append("status = ?")
        params.append(status)
    return [_decode(r) for r in db.connection()["devices"].rows_where(" AND ".join(clauses) or None, params,
                                                                      order_by="id")]


def create_device(*, db: Database, device_id: str, name: str | None, tags: dict[str, str], created: str) -> bool:
    """Insert a device; False when one with this id already exists."""
    with db.transaction() as tx:
        cursor = tx.execute("INSERT OR IGNORE INTO devices (id, name, tags, created) VALUES (?, ?, ?, ?)",
                            [device_id, name, dumps(tags), created])
        return cursor.rowcount == 1


def record_status(*, db: Database, device_id: str, status: str, seen: str | None, profile: str,
                  agent_version: str, scoring_url: str | None, device_tags: dict[str, str], created: str) -> bool:
    """Apply a status message (creating the device); True when the device is new or its tags or firmware profile
    changed (either can change which deployments target it: selectors, fit checks).

    The device's own tags count only until it is first seen; after that the
    server's tags (``PATCH /api/devices/{id}``) are the truth. Tags already
    set on a device registered through the API win over the device's own.
    """
    with db.transaction():
        new = create_device(db=db, device_id=device_id, name=None, tags={}, created=created)
        device = get_device(db=db, device_id=device_id)
        tags = device["tags"]
        if device["last_seen"] is None and seen is not None:
            tags = {**device_tags, **tags}
        db.connection().execute(
            "UPDATE devices SET status = ?, last_seen = COALESCE(?, last_seen), profile = COALESCE(NULLIF(?, ''), "
            "profile), agent_version = COALESCE(NULLIF(?, ''), agent_version), scoring_url = COALESCE(?, "
            "scoring_url), tags = ? WHERE id = ?",
            [status, seen, profile, agent_version, scoring_url, dumps(tags), device_id])
    return new or tags != device["tags"] or bool(profile) and profile != device["profile"]


def record_reported(*, db: Database, device_id: str, reported: dict, seen: str | None, profile: str,
                    agent_version: str, created: str) -> bool:
    """Store a device's reported state (creating the device); True when the device is new or its firmware profile
    changed."""
    with db.transaction():
        new = create_device(db=db, device_id=device_id, name=None, tags={}, created=created)
        before = get_device(db=db, device_id=device_id)["profile"]
        db.connection().execute(
            "UPDATE devices SET reported = ?, last_seen = COALESCE(?, last_seen), profile = COALESCE(NULLIF(?, ''), "
            "profile), agent_version = COALESCE(NULLIF(?, ''), agent_version) WHERE id = ?",
            [dumps(reported), seen, profile, agent_version, device_id])
    return new or bool(profile) and profile != before


def touch(*, db: Database, device_id: str, seen: str) -> None:
    with db.transaction() as tx:
        tx.execute("UPDATE devices SET last_seen = ? WHERE id = ?", [seen, device_id])


def update_device(*, db: Database, device_id: str, name: str | None = None,
                  tags: dict[str, str] | None = None) -> dict | None:
    with db.transaction() as tx:
        if name is not None:
            tx.execute("UPDATE devices SET name = ? WHERE id = ?", [name, device_id])
        if tags is not None:
            tx.execute("UPDATE devices SET tags = ? WHERE id = ?", [dumps(tags), device_id])
    return get_device(db=db, device_id=device_id)


def set_revoked(*, db: Database, device_id: str, revoked: str | None) -> None:
    """Mark the device revoked (its certificates are in the CRL; it is given no modules) or not."""
    with db.transaction() as tx:
        tx.execute("UPDATE devices SET revoked = ? WHERE id = ?", [revoked, device_id])


def set_desired(*, db: Database, device_id: str, generation: int, key: str, envelope: dict) -> None:
    with db.transaction() as tx:
        tx.execute("UPDATE devices SET desired_generation = ?, desired_key = ?, desired_envelope = ? WHERE id = ?",
                   [generation, key, dumps(envelope), device_id])


def published_desired(*, db: Database) -> list[tuple[str, dict]]:
    """``(device id, signed desired-state envelope)`` for every device that has one."""
    rows = db.connection().execute(
        "SELECT id, desired_envelope FROM devices WHERE desired_envelope IS NOT NULL ORDER BY id").fetchall()
    return [(device_id, loads(envelope)) for device_id, envelope in rows]
