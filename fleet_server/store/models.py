"""The model registry table: one row per (name, version)."""

from __future__ import annotations

from ._json import dumps, loads, tag_filter_sql
from .db import Database

_JSON = ("inputs", "outputs", "tags", "properties")


def _decode(row: dict) -> dict:
    return {**row, **{k: loads(row[k], {} if k in ("tags", "properties") else []) for k in _JSON}}


def insert_version(*, db: Database, name: str, runtime: str, sha256: str, size: int, inputs: list, outputs: list,
                   tags: dict, properties: dict, created: str) -> dict:
    """Register the next version of ``name`` (1, 2, …) atomically and return the record."""
    with db.transaction() as tx:
        version = next_version(db=db, name=name)
        row = {"name": name, "version": version, "runtime": runtime, "sha256": sha256, "size": size,
               "inputs": dumps(inputs), "outputs": dumps(outputs), "tags": dumps(tags),
               "properties": dumps(properties), "created": created}
        tx["model_versions"].insert(row)
    return _decode(row)


def next_version(*, db: Database, name: str) -> int:
    (current,) = db.connection().execute(
        "SELECT COALESCE(MAX(version), 0) FROM model_versions WHERE name = ?", [name]).fetchone()
    return current + 1


def get_version(*, db: Database, name: str, version: int) -> dict | None:
    rows = list(db.connection()["model_versions"].rows_where("name = ? AND version = ?", [name, version]))
    return _decode(rows[0]) if rows else None


def latest_version(*, db: Database, name: str) -> dict | None:
    rows = list(db.connection()["model_versions"].rows_where("name = ?", [name], order_by="version DESC", limit=1))
    return _decode(rows[0]) if rows else None


def list_versions(*, db: Database, name: str) -> list[dict]:
    return [_decode(r) for r in db.connection()["model_versions"].rows_where("name = ?", [name], order_by="version")]


def search_latest(*, db: Database, name: str | None = None, q: str | None = None,
                  tags: dict[str, str] | None = None) -> list[dict]:
    """For each model name, its newest version among those matching every filter."""
    clauses, params = tag_filter_sql("tags", tags or {})
    if name is not None:
        clauses.append("name = ?")
        params.append(name)
    if q:
        clauses.append("instr(lower(name), lower(?)) > 0")
        params.append(q)
    rows = db.connection()["model_versions"].rows_where(" AND ".join(clauses) or None, params,
                                                         order_by="name, version DESC")
    latest: dict[str, dict] = {}
    for row in rows:
        latest.setdefault(row["name"], _decode(row))
    return list(latest.values())


def find_by_sha256(*, db: Database, sha256: str, prefer_name: str | None = None) -> dict | None:
    """A registered version with these exact bytes, preferring ``prefer_name``, then the newest."""
    rows = [_decode(r) for r in db.connection()["model_versions"].rows_where(
        "sha256 = ?", [sha256], order_by="created DESC, version DESC")]
    preferred = [r for r in rows if r["name"] == prefer_name]
    return (preferred or rows or [None])[0]


def update_version(*, db: Database, name: str, version: int, tags: dict | None = None,
                   properties: dict | None = None) -> dict | None:
    changes = {k: dumps(v) for k, v in (("tags", tags), ("properties", properties)) if v is not None}
    if changes:
        with db.transaction() as tx:
            tx.execute(f"UPDATE model_versions SET {', '.join(f'{k} = ?' for k in changes)} "
                       "WHERE name = ? AND version = ?", [*changes.values(), name, version])
    return get_version(db=db, name=name, version=version)


def delete_version(*, db: Database, name: str, version: int) -> None:
    with db.transaction() as tx:
        tx.execute("DELETE FROM model_versions WHERE name = ? AND version = ?", [name, version])


def sha256_referenced(*, db: Database, sha256: str) -> bool:
    return db.connection()["model_versions"].count_where("sha256 = ?", [sha256]) > 0
