"""Labels joined to scored requests (feedback records); ``(source, model, request_id)`` counts each request once.

``source`` is the device that scored the request, or :data:`SERVER` for a
request the server's cloud scoring answered. ``pairs`` is the record's
``[[predicted, label], ...]`` as JSON text. A second record for the same
request (a redelivery, or a label sent twice) is ignored, so it counts once.
"""

from __future__ import annotations

from sqlalchemy import select

from ._json import dumps, loads
from .db import Database
from .schema import feedback

SERVER = ":server"  # not a device id: device ids are names without ':'


def insert(*, db: Database, source: str, records: list[dict], received: str) -> int:
    """Insert checked feedback records (:func:`fleet_protocol.feedback.parse_record`); return how many were new."""
    return db.insert_new(feedback, [
        {"source": source, "model": r["model"], "version": r["version"], "request_id": r["request_id"],
         "scored_on": r["scored_on"], "split": int(r["split"]), "pairs": dumps(r["pairs"]), "received": received}
        for r in records])


def pairs_by_version(*, db: Database, model: str, sources: list[str] | None = None, since: str | None = None,
                     split_only: bool = False) -> dict[int, list[list[str]]]:
    """Every ``[predicted, label]`` pair of ``model`` by version; optionally only these sources, since a time, or
    only requests an A/B split routed."""
    f = feedback.c
    query = select(f.version, f.pairs).where(f.model == model)
    if sources is not None:
        if not sources:
            return {}
        query = query.where(f.source.in_(sources))
    if since is not None:
        query = query.where(f.received >= since)
    if split_only:
        query = query.where(f.split == 1)
    found: dict[int, list[list[str]]] = {}
    for row in db.rows(query.order_by(f.id)):
        found.setdefault(row["version"], []).extend(loads(row["pairs"]))
    return found
