"""The outbox at its bounds: captures go first, then telemetry, events last; every drop is counted."""

from __future__ import annotations

import json

from edge_agent.outbox import Outbox


def kinds(box: Outbox) -> list[str]:
    return [r.kind for r in box.pending(1000)]


def test_over_the_record_bound_captures_are_dropped_before_telemetry_and_events(tmp_path):
    box = Outbox(tmp_path / "agent.db", max_records=10)
    box.add_many([("event", {"n": i}) for i in range(3)] + [("heartbeat", {"n": i}) for i in range(3)]
                 + [("capture", {"n": i}) for i in range(4)])
    box.add_many([("heartbeat", {"n": 3}), ("heartbeat", {"n": 4}), ("event", {"n": 3})])
    assert kinds(box).count("capture") == 1 and kinds(box).count("event") == 4
    assert [r.data["n"] for r in box.pending(1000) if r.kind == "capture"] == [3], "the oldest capture goes first"
    assert box.take_dropped_by_class() == {"capture": 3}
    box.add_many([("heartbeat", {"n": 5 + i}) for i in range(3)])
    assert "capture" not in kinds(box) and kinds(box).count("event") == 4
    assert box.take_dropped_by_class() == {"capture": 1, "telemetry": 2}
    assert box.take_dropped_by_class() == {}


def test_the_byte_bound_holds_and_is_restored_after_reopening(tmp_path):
    blob = "x" * 10_000
    box = Outbox(tmp_path / "agent.db", max_bytes=65_536)
    box.add("event", {"event": "install_succeeded"})
    for i in range(20):
        box.add("capture", {"n": i, "blob": blob})
    assert box.size_bytes() <= 65_536
    kept = [r.data["n"] for r in box.pending(1000) if r.kind == "capture"]
    assert kept == list(range(20 - len(kept), 20)) and "event" in kinds(box)
    assert box.take_dropped_by_class()["capture"] == 20 - len(kept)
    size = box.size_bytes()
    box.close()
    again = Outbox(tmp_path / "agent.db", max_bytes=65_536)
    assert again.size_bytes() == size
    again.delete([r.seq for r in again.pending(1000)])
    assert again.size_bytes() == 0 and again.count() == 0


def test_a_batch_is_cut_at_the_byte_budget_but_never_empty(tmp_path):
    box = Outbox(tmp_path / "agent.db")
    for i in range(5):
        box.add("capture", {"n": i, "blob": "y" * 1000})
    one = len(json.dumps({"blob": "y" * 1000, "n": 0}, separators=(",", ":")))
    assert [r.data["n"] for r in box.pending(100, max_bytes=2 * one)] == [0, 1]
    assert len(box.pending(100, max_bytes=10)) == 1
