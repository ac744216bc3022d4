"""The model registry table: one row per (name, version)."""

from __future__ import annotations

from sqlalchemy import delete, func, insert, select, update

from ._json import dumps, loads, tag_filter
from .db import Database
from .schema import model_versions

_JSON = ("inputs", "outputs", "tags", "properties")
_m = model_versions.c


def _decode(row: dict) -> dict:
    return {**row, **{k: loads(row[k], {} if k in ("tags", "properties") else []) for k in _JSON}}


def insert_version(*, db: Database, name: str, runtime: str, sha256: str, size: int, inputs: list, outputs: list,
                   tags: dict, properties: dict, created: str) -> dict:
    """Register the next version of ``name`` (1, 2, …) atomically and return the record."""
    with db.transaction() as conn:
        version = next_version(db=db, name=name)
        row = {"name": name, "version": version, "runtime": runtime, "sha256": sha256, "size": size,
               "inputs": dumps(inputs), "outputs": dumps(outputs), "tags": dumps(tags),
               "properties": dumps(properties), "created": created}
        conn.execute(insert(model_versions).values(row))
    return _decode(row)


def next_version(*, db: Database, name: str) -> int:
    """The version the next registration of ``name`` gets; inside a transaction it holds the name's numbering
    until that transaction ends."""
    with db.transaction() as conn:
        db.lock(conn, "model_versions", name)
        current = conn.execute(select(func.coalesce(func.max(_m.version), 0)).where(_m.name == name)).scalar_one()
    return current + 1


def get_version(*, db: Database, name: str, version: int) -> dict | None:
    row = db.row(select(model_versions).where(_m.name == name, _m.version == version))
    return _decode(row) if row else None


def latest_version(*, db: Database, name: str) -> dict | None:
    row = db.row(select(model_versions).where(_m.name == name).order_by(_m.version.desc()).limit(1))
    return _decode(row) if row else None


def list_versions(*, db: Database, name: str) -> list[dict]:
    return [_decode(r) for r in db.rows(select(model_versions).where(_m.name == name).order_by(_m.version))]


def search_latest(*, db: Database, name: str | None = None, q: str | None = None,
                  tags: dict[str, str] | None = None) -> list[dict]:
    """For each model name, its newest version among those matching every filter."""
    query = select(model_versions).where(*tag_filter(_m.tags, tags or {}))
    if name is not None:
        query = query.where(_m.name == name)
    if q:
        query = query.where(func.lower(_m.name).contains(q.lower(), autoescape=True))
    latest: dict[str, dict] = {}
    for row in db.rows(query.order_by(_m.name, _m.version.desc())):
        latest.setdefault(row["name"], _decode(row))
    return list(latest.values())


def find_by_sha256(*, db: Database, sha256: str, prefer_name: str | None = None) -> dict | None:
    """A registered version with these exact bytes, preferring ``prefer_name``, then the newest."""
    rows = [_decode(r) for r in db.rows(select(model_versions).where(_m.sha256 == sha256)
                                        .order_by(_m.created.desc(), _m.version.desc()))]
    preferred = [r for r in rows if r["name"] == prefer_name]
    return (preferred or rows or [None])[0]


def update_version(*, db: Database, name: str, version: int, tags: dict | None = None,
                   properties: dict | None = None) -> dict | None:
    changes = {k: dumps(v) for k, v in (("tags", tags), ("properties", properties)) if v is not None}
    if changes:
        with db.transaction() as conn:
            conn.execute(update(model_versions).where(_m.name == name, _m.version == version).values(**changes))
    return get_version(db=db, name=name, version=version)


def delete_version(*, db: Database, name: str, version: int) -> None:
    with db.transaction() as conn:
        conn.execute(delete(model_versions).where(_m.name == name, _m.version == version))


def sha256_referenced(*, db: Database, sha256: str) -> bool:
    return db.scalar(select(func.count()).select_from(model_versions).where(_m.sha256 == sha256)) > 0
