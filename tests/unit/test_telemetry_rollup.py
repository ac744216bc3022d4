"""What one raw telemetry record adds to its minute or hour rollup row (fleet_server.telemetry_rollup, pure)."""

from __future__ import annotations

import random

from fleet_protocol import sketch
from fleet_server import telemetry_rollup as rollup

MINUTE = rollup.RESOLUTIONS["minute"]


def _stats(ts: str, latencies_ns: list[int], *, model: str = "iris", version: int = 2, errors: int = 0) -> dict:
    counts = [0] * sketch.KEYS
    for ns in latencies_ns:
        counts[sketch.key_of(ns)] += 1
    return {"device_id": "d1", "ts": ts, "kind": "model_stats", "received": ts,
            "data": {"model": model, "version": version, "requests": len(latencies_ns), "errors": errors,
                     "latency_sketch": sketch.encode(counts)}}


def test_rollup_latency_equals_the_sketch_of_every_request_however_the_records_were_merged():
    rng = random.Random(5)
    batches = [[int(rng.lognormvariate(13, 1)) for _ in range(rng.randint(1, 300))] for _ in range(12)]
    records = [_stats(f"2026-12-01T10:00:{i:02d}Z", latencies) for i, latencies in enumerate(batches)]
    whole = rollup.aggregate(records, MINUTE)  # one roll-up pass
    row = rollup.empty_row(next(iter(whole)))
    for record in records:  # ... or one record per pass, merged into the stored row each time
        for adds in rollup.aggregate([record], MINUTE).values():
            rollup.merge_into(row, {c: adds[c] for c in rollup.SUMS + ("latency_bins",)})
    everything = sketch.Sketch()
    for ns in (ns for latencies in batches for ns in latencies):
        everything.merge({sketch.key_of(ns): 1})
    expected = {f"p{round(q * 100)}": round(everything.quantile(q) / 1000) for q in (0.5, 0.95, 0.99)}
    for merged in (next(iter(whole.values())), row):
        latency = rollup.public(merged, "minute")["latency_us"]
        assert {k: latency[k] for k in expected} == expected
        assert merged["requests"] == sum(map(len, batches)) and merged["records"] == len(batches)
        assert latency["min"] == round(sketch.value_of(sketch.key_of(min(map(min, batches)))) / 1000)


def test_a_record_whose_fields_do_not_check_out_is_counted_and_adds_nothing():
    bad = [{"device_id": "d1", "ts": "2026-12-01T10:00:01Z", "received": "2026-12-01T10:00:05Z", "kind": kind,
            "data": data} for kind, data in (
        ("model_stats", {"model": "Not A Name!", "requests": 5}),  # no valid model: the device's own row
        ("model_stats", {"model": "iris", "version": 1, "requests": -3, "errors": True,
                         "latency_sketch": {"alpha_ppm": 1, "bins": [[1, 1]]}}),
        ("heartbeat", {"cpu_percent": "90", "rss_bytes": 2**60}),
        ("fallback", {"model": "iris", "reasons": {"low_confidence": {"ok": "many", "failed": 2}}}),
        ("event", []),
    )]
    rows = rollup.aggregate(bad, MINUTE)
    device = rows[("d1", rollup.DEVICE_ROW, 0, "2026-12-01T10:00:00Z")]
    iris = rows[("d1", "iris", 1, "2026-12-01T10:00:00Z")]
    fallback = rows[("d1", "iris", 0, "2026-12-01T10:00:00Z")]
    assert sum(r["records"] for r in rows.values()) == len(bad)
    assert (device["records"], device["heartbeats"], device["events"], device["requests"]) == (3, 1, 1, 0)
    assert (device["cpu_percent_max"], device["rss_bytes_max"]) == (None, None)
    assert (iris["requests"], iris["errors"], iris["latency_bins"]) == (0, 0, None)
    assert fallback["fallbacks"] == 2


def test_a_record_whose_time_does_not_parse_falls_in_the_bucket_it_was_received_in():
    record = {"device_id": "d1", "ts": "yesterday", "received": "2026-12-01T10:59:59Z", "kind": "event", "data": {}}
    assert list(rollup.aggregate([record], rollup.RESOLUTIONS["hour"])) == [("d1", "", 0, "2026-12-01T10:00:00Z")]
