"""Minute and hour rollups of raw telemetry: which row a record adds to, what it adds, and how rows merge.

A rollup row is keyed by ``(device_id, model, version, bucket)``; ``bucket``
is the start of the record's minute or hour (its ``ts``, the device's time of
measurement, as ``YYYY-MM-DDTHH:MM:00Z``; the server's ``received`` time
when the device's ``ts`` does not parse). Every raw record adds to exactly
one row per resolution, so the ``records`` of a device's rows add up to its
raw records:

- ``model_stats`` adds to its model version's row: ``requests`` (answered),
  ``errors``, and its latency sketch merged into ``latency_bins``
  (:mod:`fleet_protocol.sketch`: quantiles within 1 % after any merge;
  stored as ``[key, count, key step, count, ...]``);
- ``fallback`` adds its counts to ``fallbacks`` of the model's row with
  ``version`` 0 (the agent counts fallbacks per model, not per version);
- ``heartbeat`` adds to the device's own row (``model`` ``""``, ``version``
  0): ``heartbeats``, ``cpu_percent_sum`` / ``_max``, ``rss_bytes_max``,
  ``memory_percent_max``, ``disk_free_bytes_min``; ``event`` adds to
  ``events`` there; any other kind only to ``records``.

Record data is the device's (untrusted, stored as sent): a field that does
not check out adds nothing, and a record without a valid model name counts
on the device's own row. This module does no I/O; the store
(:mod:`fleet_server.store.rollups`) reads raw rows and writes these.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from fleet_protocol import sketch
from fleet_protocol.errors import MessageError
from fleet_protocol.fields import MAX_INT, NAME
from fleet_protocol.timestamps import from_iso

RESOLUTIONS: dict[str, int] = {"minute": 60, "hour": 3600}  # bucket width in seconds
DEVICE_ROW = ""  # the model of a device's own row (heartbeats, events, other kinds)
SUMS = ("records", "requests", "errors", "fallbacks", "heartbeats", "events", "cpu_percent_sum")
MAXIMA = ("cpu_percent_max", "rss_bytes_max", "memory_percent_max")
MINIMA = ("disk_free_bytes_min",)
KEY = ("device_id", "model", "version", "bucket")
COLUMNS = KEY + SUMS + MAXIMA + MINIMA + ("latency_bins",)

Key = tuple[str, str, int, str]


def bucket_start(ts: str, received: str, seconds: int) -> str:
    """The start of the ``seconds``-wide bucket holding ``ts`` (``received`` when ``ts`` is no timestamp)."""
    try:
        moment = from_iso(ts)
    except MessageError:
        moment = from_iso(received)
    epoch = int(moment.timestamp()) // seconds * seconds
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def aggregate(records: list[dict], seconds: int) -> dict[Key, dict]:
    """Rollup rows (each a full row, zeros where nothing was added) of raw records (``device_id``, ``ts``,
    ``kind``, ``data`` decoded, ``received``) into buckets ``seconds`` wide."""
    rows: dict[Key, dict] = {}
    for record in records:
        model, version, adds = _contribution(record["kind"], record["data"])
        key = (record["device_id"], model, version, bucket_start(record["ts"], record["received"], seconds))
        row = rows.get(key)
        if row is None:
            row = rows[key] = empty_row(key)
        merge_into(row, adds)
    return rows


def empty_row(key: Key) -> dict:
    return {**dict(zip(KEY, key)), **{c: 0 for c in SUMS}, **{c: None for c in MAXIMA + MINIMA},
            "latency_bins": None}


def merge_into(row: dict, adds: dict) -> None:
    """Add ``adds`` (some of the value columns) into ``row``: sums add, maxima and minima keep the extreme,
    latency sketches merge."""
    for column, value in adds.items():
        if value is None:
            continue
        if column in SUMS:
            row[column] += value
        elif column in MAXIMA:
            row[column] = value if row[column] is None else max(row[column], value)
        elif column in MINIMA:
            row[column] = value if row[column] is None else min(row[column], value)
        elif column == "latency_bins":
            row[column] = _merge_bins(row[column], value)


def public(row: dict, resolution: str) -> dict:
    """A stored rollup row as ``GET /api/telemetry?resolution=`` answers it: latency read out of the sketch
    (``min``/``p50``/``p95``/``p99``/``max`` in µs, within 1 %), ``cpu_percent_avg`` from its sum."""
    counts = _decode_bins(row["latency_bins"])
    latency = None
    if counts:
        merged = sketch.Sketch()
        merged.merge(counts)
        latency = {"min": _us(sketch.value_of(min(counts))),
                   **{f"p{round(q * 100)}": _us(merged.quantile(q)) for q in (0.50, 0.95, 0.99)},
                   "max": _us(sketch.value_of(max(counts)))}
    heartbeats = row["heartbeats"]
    return {"resolution": resolution, **{c: row[c] for c in KEY + SUMS + MAXIMA + MINIMA if c != "cpu_percent_sum"},
            "cpu_percent_avg": round(row["cpu_percent_sum"] / heartbeats) if heartbeats else None,
            "latency_us": latency}


def _contribution(kind: str, data: object) -> tuple[str, int, dict]:
    """(model, version, what the record adds) for one raw record."""
    data = data if isinstance(data, dict) else {}
    model = data.get("model")
    if kind == "heartbeat":
        return DEVICE_ROW, 0, {"records": 1, "heartbeats": 1, "cpu_percent_sum": _count(data, "cpu_percent"),
                               "cpu_percent_max": _count(data, "cpu_percent"),
                               "rss_bytes_max": _count(data, "rss_bytes"),
                               "memory_percent_max": _count(data, "memory_percent"),
                               "disk_free_bytes_min": _count(data, "disk_free_bytes")}
    if kind not in ("model_stats", "fallback") or not isinstance(model, str) or not NAME.fullmatch(model):
        return DEVICE_ROW, 0, {"records": 1, "events": 1 if kind == "event" else 0}
    if kind == "fallback":
        return model, 0, {"records": 1, "fallbacks": _fallbacks(data.get("reasons"))}
    return model, _count(data, "version") or 0, {"records": 1, "requests": _count(data, "requests"),
                                                  "errors": _count(data, "errors"),
                                                  "latency_bins": _bins(data.get("latency_sketch"))}


def _count(data: dict, key: str) -> int | None:
    """``data[key]`` when it is an integer in 0..MAX_INT, else None (adds nothing)."""
    value = data.get(key)
    return value if type(value) is int and 0 <= value <= MAX_INT else None


def _fallbacks(reasons: object) -> int:
    """The sum of a fallback record's ``{reason: {outcome: count}}``; what is not a count adds nothing."""
    if not isinstance(reasons, dict):
        return 0
    return sum(n for outcomes in reasons.values() if isinstance(outcomes, dict)
               for n in outcomes.values() if type(n) is int and 0 <= n <= MAX_INT)


def _bins(doc: object) -> str | None:
    """A record's latency sketch as stored bins text, or None when it has none or it does not parse."""
    try:
        counts = sketch.parse(doc)
    except MessageError:
        return None
    return _encode_bins(counts) if counts else None


def _merge_bins(stored: str | None, adds: str) -> str:
    counts = _decode_bins(stored)
    for key, count in _decode_bins(adds).items():
        counts[key] = counts.get(key, 0) + count
    return _encode_bins(counts)


def _encode_bins(counts: dict[int, int]) -> str:
    """Stored form of a sketch: ``[key, count, key step, count, ...]`` by rising key (a step is 1-3 digits where a
    key is 4: about half the text of ``[[key, count], ...]``, and most of a minute row is its sketch)."""
    flat, previous = [], 0
    for key in sorted(k for k, c in counts.items() if c):
        flat += [key - previous, counts[key]]
        previous = key
    return json.dumps(flat, separators=(",", ":"))


def _decode_bins(text: str | None) -> dict[int, int]:
    counts, key = {}, 0
    flat = json.loads(text) if text else []
    for i in range(0, len(flat), 2):
        key += flat[i]
        counts[key] = flat[i + 1]
    return counts


def _us(ns: float | None) -> int | None:
    return None if ns is None else round(ns / 1000)
