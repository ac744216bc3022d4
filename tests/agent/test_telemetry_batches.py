"""Telemetry batches built from the outbox's stored text, the in-flight cursor, and waking on PUBACK."""

from __future__ import annotations

import json
import sqlite3

import pytest

from edge_agent.outbox import Outbox
from edge_agent.telemetry import MAX_INFLIGHT_BATCHES, PENDING_EXPIRY_S, Telemetry, encode_batch
from edgefleet_runtime.runtime import Runtime
from fleet_protocol import messages
from fleet_protocol.errors import MessageError
from firmware_profiles import load_profile

ODD_DATA = {"z": "é ünïcode ☃ \u0001 \"q\" \\", "a": [1, -2, {"k": None, "b": True}], "n": {"y": [], "x": {}}}


class FakeLink:
    """Accepts every publish; records the payloads and hands out message ids."""

    connected = True

    def __init__(self) -> None:
        self.sent: list[tuple[int, bytes]] = []

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> int:
        self.sent.append((len(self.sent) + 1, payload))
        return len(self.sent)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_telemetry(tmp_path, link: FakeLink, clock: Clock, **kwargs) -> Telemetry:
    return Telemetry(outbox=Outbox(tmp_path / "agent.db"), link=link, device_id="dev-1",
                     runtime=Runtime(load_profile("generic-cpu")), disk_path=str(tmp_path),
                     heartbeat_interval_s=3600, flush_interval_s=5, clock=clock, first_heartbeat_s=3600, **kwargs)


def sent_seqs(payload: bytes) -> list[int]:
    return [r.seq for r in messages.parse_telemetry_batch(payload).records]


def test_a_batch_from_stored_text_is_byte_identical_to_the_canonical_encoding(tmp_path):
    box = Outbox(tmp_path / "agent.db")
    box.add_many([("event", ODD_DATA), ("model_stats", {"requests": 3}), ("heartbeat", {})], ts="2026-11-23T00:00:00Z")
    stored = box.pending_stored(10)
    batch = messages.TelemetryBatch("dev-1", box.outbox_id, tuple(box.pending(10)))
    assert encode_batch("dev-1", box.outbox_id, stored) == messages.encode(batch.to_dict())
    assert messages.parse_telemetry_batch(encode_batch("dev-1", box.outbox_id, stored)) == batch


def test_the_outbox_refuses_floats_when_a_record_is_added(tmp_path):
    box = Outbox(tmp_path / "agent.db")
    with pytest.raises(MessageError):
        box.add_many([("heartbeat", {"ok": 1}), ("heartbeat", {"load": [1, 0.5]})])
    assert box.count() == 0


def test_rows_written_before_the_canonical_rule_are_rewritten_or_dropped_when_opened(tmp_path):
    Outbox(tmp_path / "agent.db").close()
    db = sqlite3.connect(tmp_path / "agent.db")
    db.execute("DELETE FROM meta WHERE key = 'data_form'")
    db.executemany("INSERT INTO outbox(kind, ts, data) VALUES (?, 'ts', ?)",
                   [("event", json.dumps(ODD_DATA, separators=(",", ":"), sort_keys=True)),
                    ("heartbeat", '{"load":0.5}')])
    db.commit()
    db.close()
    box = Outbox(tmp_path / "agent.db")
    assert [r.data for r in box.pending(10)] == [ODD_DATA]
    assert box.pending_stored(10)[0].data_json == json.dumps(ODD_DATA, sort_keys=True, separators=(",", ":"),
                                                             ensure_ascii=False)
    assert box.count() == 1 and box.take_dropped_by_class() == {"telemetry": 1}


def test_records_after_the_cursor_are_read_and_in_flight_ones_skipped(tmp_path):
    box = Outbox(tmp_path / "agent.db")
    seqs = box.add_many([("heartbeat", {"n": n}) for n in range(6)])
    assert [r.seq for r in box.pending_stored(10, after=seqs[2])] == seqs[3:]
    assert [r.seq for r in box.pending_stored(2, after=seqs[0], exclude={seqs[2]})] == [seqs[1], seqs[3]]


def test_a_flush_sends_every_record_once_in_seq_order_up_to_the_in_flight_limit(tmp_path):
    link = FakeLink()
    telemetry = make_telemetry(tmp_path, link, Clock())
    total = (MAX_INFLIGHT_BATCHES + 2) * messages.MAX_TELEMETRY_RECORDS
    telemetry.outbox.add_many([("model_stats", {"n": n}) for n in range(total)])
    telemetry.flush()
    assert len(link.sent) == MAX_INFLIGHT_BATCHES
    for mid, _ in link.sent[:3]:  # acknowledged out of order: the 3rd before the 1st
        telemetry.on_puback(4 - mid)
    telemetry.flush()
    seqs = [seq for _, payload in link.sent for seq in sent_seqs(payload)]
    assert seqs == sorted(set(seqs)) and len(seqs) == total


def test_an_expired_batch_is_sent_again_with_the_same_records(tmp_path):
    link, clock = FakeLink(), Clock()
    telemetry = make_telemetry(tmp_path, link, clock)
    telemetry.outbox.add_many([("model_stats", {"n": n}) for n in range(3 * messages.MAX_TELEMETRY_RECORDS)])
    telemetry.flush()
    first = [sent_seqs(payload) for _, payload in link.sent]
    telemetry.on_puback(1)  # batches 2 and 3 are never acknowledged
    clock.now += PENDING_EXPIRY_S + 1
    telemetry.on_connect()
    clock.now += PENDING_EXPIRY_S + 1
    telemetry.flush()
    assert [sent_seqs(payload) for _, payload in link.sent[3:]] == first[1:]


def test_a_puback_wakes_the_next_flush_only_while_a_backlog_remains(tmp_path):
    link, woken = FakeLink(), []
    telemetry = make_telemetry(tmp_path, link, Clock(), on_wake=lambda: woken.append(1))
    telemetry.outbox.add_many([("model_stats", {"n": n}) for n in range(10)])
    telemetry.flush()  # one batch: the window is not full
    telemetry.on_puback(1)
    assert not woken
    telemetry.outbox.add_many([("model_stats", {"n": n})
                               for n in range((MAX_INFLIGHT_BATCHES + 1) * messages.MAX_TELEMETRY_RECORDS)])
    telemetry.flush()
    assert len(link.sent) == 1 + MAX_INFLIGHT_BATCHES
    telemetry.on_puback(link.sent[-1][0])
    assert woken == [1]
    telemetry.step()  # due at once, not at the next tick
    assert len(link.sent) == 2 + MAX_INFLIGHT_BATCHES
