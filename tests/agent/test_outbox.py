"""Outbox: durable, ordered, bounded; the outbox id and the trusted generation survive a restart."""

from __future__ import annotations

from edge_agent.outbox import Outbox


def test_records_come_back_in_seq_order_and_survive_reopening(tmp_path):
    box = Outbox(tmp_path / "agent.db")
    seqs = [box.add("heartbeat", {"n": i}) for i in range(5)]
    outbox_id = box.outbox_id
    box.close()
    again = Outbox(tmp_path / "agent.db")
    assert again.outbox_id == outbox_id
    assert [(r.seq, r.data["n"]) for r in again.pending(10)] == list(zip(seqs, range(5)))
    assert again.count() == 5


def test_pending_skips_records_in_flight_and_delete_removes_only_acknowledged_ones(tmp_path):
    box = Outbox(tmp_path / "agent.db")
    seqs = box.add_many([("heartbeat", {"n": i}) for i in range(6)])
    assert [r.seq for r in box.pending(3, exclude=set(seqs[:2]))] == seqs[2:5]
    box.delete(seqs[:2])
    assert [r.seq for r in box.pending(10)] == seqs[2:]
    assert box.count() == 4


def test_seqs_are_never_reused_after_the_newest_records_are_deleted(tmp_path):
    box = Outbox(tmp_path / "agent.db")
    first = box.add("heartbeat", {})
    box.delete([first])
    box.close()
    assert Outbox(tmp_path / "agent.db").add("heartbeat", {}) > first


def test_over_the_bound_the_oldest_non_event_records_are_dropped_first_and_counted(tmp_path):
    box = Outbox(tmp_path / "agent.db", max_records=10)
    events = [box.add("event", {"event": "install_started", "n": i}) for i in range(3)]
    for i in range(12):
        box.add("heartbeat", {"n": i})
    kept = box.pending(100)
    assert box.count() == 10 == len(kept)
    assert [r.seq for r in kept if r.kind == "event"] == events
    assert [r.data["n"] for r in kept if r.kind == "heartbeat"] == list(range(5, 12))
    assert box.take_dropped() == 5
    assert box.take_dropped() == 0


def test_when_only_events_are_left_the_oldest_events_go(tmp_path):
    box = Outbox(tmp_path / "agent.db", max_records=10)
    seqs = [box.add("event", {"n": i}) for i in range(13)]
    assert [r.seq for r in box.pending(100)] == seqs[3:]


def test_meta_values_persist(tmp_path):
    box = Outbox(tmp_path / "agent.db")
    box.set_meta("last_generation", "7")
    box.set_meta("last_generation", "8")
    box.close()
    assert Outbox(tmp_path / "agent.db").get_meta("last_generation") == "8"
