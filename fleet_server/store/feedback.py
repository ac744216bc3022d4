"""Labels joined to scored requests (feedback records); ``(source, model, request_id)`` counts each request once.

``source`` is the device that scored the request, or :data:`SERVER` for a
request the server's cloud scoring answered. ``pairs`` is the record's
``[[predicted, label], ...]`` as JSON text. A second record for the same
request (a redelivery, or a label sent twice) is ignored, so it counts once.
"""

from __future__ import annotations

from ._json import dumps, loads
from .db import Database

SERVER = ":server"  # not a device id: device ids are names without ':'


def insert(*, db: Database, source: str, records: list[dict], received: str) -> int:
    """Insert checked feedback records (:func:`fleet_protocol.feedback.parse_record`); return how many were new."""
    rows = [(source, r["model"], r["version"], r["request_id"], r["scored_on"], int(r["split"]), dumps(r["pairs"]),
             received) for r in records]
    return db.insert_new("feedback", ("source", "model", "version", "request_id", "scored_on", "split", "pairs",
                                      "received"), rows)


def pairs_by_version(*, db: Database, model: str, sources: list[str] | None = None, since: str | None = None,
                     split_only: bool = False) -> dict[int, list[list[str]]]:
    """Every ``[predicted, label]`` pair of ``model`` by version; optionally only these sources, since a time, or
    only requests an A/B split routed."""
    clauses, params = ["model = ?"], [model]
    if sources is not None:
        if not sources:
            return {}
        clauses.append(f"source IN ({', '.join('?' for _ in sources)})")
        params += sources
    if since is not None:
        clauses.append("received >= ?")
        params.append(since)
    if split_only:
        clauses.append("split = 1")
    found: dict[int, list[list[str]]] = {}
    for version, pairs in db.connection().execute(
            f"SELECT version, pairs FROM feedback WHERE {' AND '.join(clauses)} ORDER BY id", params):
        found.setdefault(version, []).extend(loads(pairs))
    return found
