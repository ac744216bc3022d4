"""Devices: identity, tags, last status and reported state, and the desired state last published.

Several server replicas write here, each handling its share of one device's
messages, so writes never assume messages arrive in order: ``last_seen``
only moves forward, a reported state older than the stored one (by its
generation and timestamp) is not stored, and :func:`set_desired` can be made
conditional on the generation it replaces.
"""

from __future__ import annotations

from sqlalchemy import Text, case, func, literal, or_, select, update

from fleet_protocol.errors import MessageError
from fleet_protocol.timestamps import from_iso

from ._json import dumps, loads, tag_filter
from .changes import QUIET
from .db import Database
from .schema import devices

_d = devices.c


def _decode(row: dict) -> dict:
    return {**row, "tags": loads(row["tags"], {}), "reported": loads(row["reported"]),
            "desired_envelope": loads(row["desired_envelope"])}


def get_device(*, db: Database, device_id: str, for_update: bool = False) -> dict | None:
    """``for_update``: lock the row until the caller's transaction ends (a read-then-write)."""
    query = select(devices).where(_d.id == device_id)
    row = db.row(query.with_for_update() if for_update else query)
    return _decode(row) if row else None


def list_devices(*, db: Database, status: str | None = None, tags: dict[str, str] | None = None) -> list[dict]:
    query = select(devices).where(*tag_filter(_d.tags, tags or {}))
    if status is not None:
        query = query.where(_d.status == status)
    return [_decode(r) for r in db.rows(query.order_by(_d.id))]


def create_device(*, db: Database, device_id: str, name: str | None, tags: dict[str, str], created: str) -> bool:
    """Insert a device; False when one with this id already exists."""
    with db.transaction() as conn:
        return conn.execute(db.insert_ignoring(devices).values(id=device_id, name=name, tags=dumps(tags),
                                                               created=created)).rowcount == 1


def _later_seen(seen: str | None):
    """``last_seen`` moved forward to ``seen``, never back: a replica handling an older message (or with a clock
    behind) cannot move it back."""
    seen_value = literal(seen, Text)
    return case((or_(_d.last_seen.is_(None), seen_value > _d.last_seen), seen_value), else_=_d.last_seen)


def _seen_values(seen: str | None, profile: str, agent_version: str) -> dict:
    """A status or report's columns: each kept as it was when the message leaves it empty."""
    return {"last_seen": _later_seen(seen),
            "profile": func.coalesce(func.nullif(profile, ""), _d.profile),
            "agent_version": func.coalesce(func.nullif(agent_version, ""), _d.agent_version)}


def record_status(*, db: Database, device_id: str, status: str, seen: str | None, profile: str,
                  agent_version: str, scoring_url: str | None, device_tags: dict[str, str], created: str) -> bool:
    """Apply a status message (creating the device); True when the device is new or its tags or firmware profile
    changed (either can change which deployments target it: selectors, fit checks).

    The device's own tags count only until its first status with a time has
    been applied; after that the server's tags (``PATCH /api/devices/{id}``)
    are the truth. Tags already set on a device registered through the API win
    over the device's own. A reported state or telemetry seen before that
    status does not end the device's say: a broker cluster (NATS) need not
    deliver one device's messages on different topics in the order it sent them.
    """
    with db.transaction() as conn:
        new = create_device(db=db, device_id=device_id, name=None, tags={}, created=created)
        device = get_device(db=db, device_id=device_id, for_update=True)
        tags = device["tags"]
        if seen is not None and (device["last_seen"] is None or device["status"] == "unknown"):
            tags = {**device_tags, **tags}
        conn.execute(update(devices).where(_d.id == device_id).values(
            status=status, scoring_url=func.coalesce(scoring_url, _d.scoring_url), tags=dumps(tags),
            **_seen_values(seen, profile, agent_version)))
    return new or tags != device["tags"] or bool(profile) and profile != device["profile"]


def record_reported(*, db: Database, device_id: str, reported: dict, seen: str | None, profile: str,
                    agent_version: str, created: str) -> bool:
    """Store a device's reported state (creating the device); True when the device is new or its firmware profile
    changed. A report older than the stored one (:func:`is_older_report`) only moves ``last_seen``."""
    with db.transaction() as conn:
        new = create_device(db=db, device_id=device_id, name=None, tags={}, created=created)
        before = get_device(db=db, device_id=device_id, for_update=True)
        if is_older_report(reported, before["reported"]):
            touch(db=db, device_id=device_id, seen=seen)
            return False
        conn.execute(update(devices).where(_d.id == device_id).values(
            reported=dumps(reported), **_seen_values(seen, profile, agent_version)))
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


def _set(db: Database, device_id: str, **values) -> None:
    with db.transaction() as conn:
        conn.execute(update(devices).where(_d.id == device_id).values(**values))


def touch(*, db: Database, device_id: str, seen: str | None) -> None:
    """Move ``last_seen`` forward to ``seen`` (never back). Quiet: the dashboard hears of it as telemetry."""
    with db.transaction() as conn:
        conn.execute(update(devices).where(_d.id == device_id).values(last_seen=_later_seen(seen))
                     .execution_options(**{QUIET: True}))


def update_device(*, db: Database, device_id: str, name: str | None = None,
                  tags: dict[str, str] | None = None) -> dict | None:
    values = {k: v for k, v in (("name", name), ("tags", dumps(tags))) if v is not None}
    if values:
        _set(db, device_id, **values)
    return get_device(db=db, device_id=device_id)


def set_revoked(*, db: Database, device_id: str, revoked: str | None) -> None:
    """Mark the device revoked (its certificates are in the CRL; it is given no modules) or not."""
    _set(db, device_id, revoked=revoked)


def set_desired(*, db: Database, device_id: str, generation: int, key: str, envelope: dict,
                replaces: int | None = None) -> bool:
    """Store a signed desired state; with ``replaces``, only over that generation (False, nothing stored, when
    another replica stored a different one first: two documents never share a generation)."""
    statement = update(devices).where(_d.id == device_id)
    if replaces is not None:
        statement = statement.where(_d.desired_generation == replaces)
    with db.transaction() as conn:
        return conn.execute(statement.values(desired_generation=generation, desired_key=key,
                                             desired_envelope=dumps(envelope))).rowcount == 1


def published_desired(*, db: Database) -> list[tuple[str, dict]]:
    """``(device id, signed desired-state envelope)`` for every device that has one."""
    rows = db.rows(select(_d.id, _d.desired_envelope).where(_d.desired_envelope.is_not(None)).order_by(_d.id))
    return [(row["id"], loads(row["desired_envelope"])) for row in rows]


def count_by_status(*, db: Database) -> dict[tuple[str, str], int]:
    """``{(status, firmware profile): devices}``; a revoked device counts as status ``revoked`` (for /metrics)."""
    status = case((_d.revoked.is_not(None), "revoked"), else_=_d.status)
    with db.read() as conn:
        rows = conn.execute(select(status, _d.profile, func.count()).group_by(status, _d.profile))
        return {(s, profile): n for s, profile, n in rows}
