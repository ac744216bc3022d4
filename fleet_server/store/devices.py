"""Devices: identity, tags, last status and reported state, and the desired state last published.

Several server replicas write here, each handling its share of one device's
messages, so writes never assume messages arrive in order: ``last_seen``
only moves forward, a reported state older than the stored one (by its
generation and timestamp) is not stored, and :func:`set_desired` can be made
conditional on the generation it replaces.
"""

from __future__ import annotations

from fleet_protocol.errors import MessageError
from fleet_protocol.timestamps import from_iso

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


# last_seen only moves forward: a replica handling an older message (or with a clock behind) cannot move it back
_LATER_SEEN = "CASE WHEN last_seen IS NULL OR ? > last_seen THEN ? ELSE last_seen END"


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
            f"UPDATE devices SET status = ?, last_seen = {_LATER_SEEN}, profile = COALESCE(NULLIF(?, ''), "
            "profile), agent_version = COALESCE(NULLIF(?, ''), agent_version), scoring_url = COALESCE(?, "
            "scoring_url), tags = ? WHERE id = ?",
            [status, seen, seen, profile, agent_version, scoring_url, dumps(tags), device_id])
    return new or tags != device["tags"] or bool(profile) and profile != device["profile"]


def record_reported(*, db: Database, device_id: str, reported: dict, seen: str | None, profile: str,
                    agent_version: str, created: str) -> bool:
    """Store a device's reported state (creating the device); True when the device is new or its firmware profile
    changed. A report older than the stored one (:func:`is_older_report`) only moves ``last_seen``."""
    with db.transaction():
        new = create_device(db=db, device_id=device_id, name=None, tags={}, created=created)
        before = get_device(db=db, device_id=device_id)
        if is_older_report(reported, before["reported"]):
            touch(db=db, device_id=device_id, seen=seen)
            return False
        db.connection().execute(
            f"UPDATE devices SET reported = ?, last_seen = {_LATER_SEEN}, profile = COALESCE(NULLIF(?, ''), "
            "profile), agent_version = COALESCE(NULLIF(?, ''), agent_version) WHERE id = ?",
            [dumps(reported), seen, seen, profile, agent_version, device_id])
    return new or bool(profile) and profile != before["profile"]


def is_older_report(reported: dict, stored: dict | None) -> bool:
    """True when ``reported`` is older than ``stored`` on both counts: a lower or equal desired generation and an
    earlier timestamp. Either one moving forward makes it newer, so a wiped device (generation back to 0) or one
    whose clock was set back is still heard."""
    if not stored or reported["generation"] > stored.get("generation", 0):
        return False
    try:
        return from_iso(reported["ts"]) < from_iso(stored.get("ts", ""))
    except MessageError:  # a timestamp that does not parse orders nothing
        return False


def touch(*, db: Database, device_id: str, seen: str | None) -> None:
    """Move ``last_seen`` forward to ``seen`` (never back)."""
    with db.transaction() as tx:
        tx.execute(f"UPDATE devices SET last_seen = {_LATER_SEEN} WHERE id = ?", [seen, seen, device_id])


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


def set_desired(*, db: Database, device_id: str, generation: int, key: str, envelope: dict,
                replaces: int | None = None) -> bool:
    """Store a signed desired state; with ``replaces``, only over that generation (False, nothing stored, when
    another replica stored a different one first: two documents never share a generation)."""
    sql = "UPDATE devices SET desired_generation = ?, desired_key = ?, desired_envelope = ? WHERE id = ?"
    params = [generation, key, dumps(envelope), device_id]
    if replaces is not None:
        sql += " AND desired_generation = ?"
        params.append(replaces)
    with db.transaction() as tx:
        return tx.execute(sql, params).rowcount == 1


def published_desired(*, db: Database) -> list[tuple[str, dict]]:
    """``(device id, signed desired-state envelope)`` for every device that has one."""
    rows = db.connection().execute(
        "SELECT id, desired_envelope FROM devices WHERE desired_envelope IS NOT NULL ORDER BY id").fetchall()
    return [(device_id, loads(envelope)) for device_id, envelope in rows]
