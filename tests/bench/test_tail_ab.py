"""The tail-latency A/B (benchmarks/tail_ab.py): outliers are attributed only to pauses that overlap them.

The attribution is pure logic and runs in CI; the interleaved run itself (two agent processes, a broker,
wrk) is under ``slow`` and asserts no timing.
"""

from __future__ import annotations

import pytest

from benchmarks import tail_ab


def _spans(latencies_ms: list[float], gap_s: float = 0.01) -> list[tuple[float, float]]:
    spans, t = [], 100.0
    for ms in latencies_ms:
        spans.append((t, t + ms / 1e3))
        t += ms / 1e3 + gap_s
    return spans


def _probe(gc=(), flush=(), heartbeat=()) -> dict:
    return {"gc": list(gc), "flush": list(flush), "heartbeat": list(heartbeat), "gc_threshold": [700, 10, 10],
            "gc_frozen": 0}


def test_only_outliers_that_overlap_a_pause_are_attributed_to_it():
    spans = _spans([0.2] * 196 + [9.0, 9.0, 9.0, 9.0])  # the 4 slow ones are the top 2 % (p99 and above)
    slow = [s for s in spans if s[1] - s[0] > 0.005]
    gc_over_first = (slow[0][0] + 0.001, slow[0][0] + 0.002, 0)
    gc_between = (spans[10][1] + 0.001, spans[10][1] + 0.002, 1)  # in a gap: overlaps no request
    flush_over_last_two = (slow[2][0] - 0.001, slow[3][1] + 0.001)
    result = tail_ab.explain(spans, _probe(gc=[gc_over_first, gc_between], flush=[flush_over_last_two]))
    assert result["outliers"] == 4
    assert result["outliers_with_gc"] == 1
    assert result["outliers_with_flush"] == 2
    assert result["outliers_with_heartbeat"] == 0
    assert result["gc_per_10k"]["gen0"]["count"] == 50.0  # 1 collection in 200 requests
    assert result["gc_per_10k"]["gen1"]["count"] == 50.0
    assert result["gc_per_10k"]["gen2"]["count"] == 0.0


@pytest.mark.slow
def test_both_sides_serve_every_round_and_their_probes_record_the_pauses():
    result = tail_ab.run({"baseline": tail_ab.ROOT, "this": tail_ab.ROOT}, rounds=2, duration_s=1,
                         concurrency=(1, 2), probe_requests=300, interval_s=0.2)
    for c in ("c1", "c2"):
        for side in ("baseline", "this"):
            assert result[c][side]["failed"] == 0 and len(result[c][side]["rounds_p99_ms"]) == 2
    for side in ("baseline", "this"):
        explained = result["explained"][side]
        assert explained["requests"] == 300 and explained["outliers"] >= 3
        assert sum(explained["gc_whole_run"].values()) > 0  # the probe's gc.callbacks saw collections
