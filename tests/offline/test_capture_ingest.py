"""The server files capture records apart from telemetry, once each; a malformed one is counted and dropped alone."""

from __future__ import annotations

import numpy as np

from fleet_protocol import messages, topics
from fleet_protocol.captures import encode_capture
from fleet_server.store import captures as capture_store
from fleet_server.store import telemetry as telemetry_store


def batch(*records: tuple[int, str, dict]) -> bytes:
    return messages.encode(messages.TelemetryBatch("dev-1", "ob-1", tuple(
        messages.TelemetryRecord(seq, "2026-01-01T00:00:00Z", kind, data) for seq, kind, data in records)).to_dict())


def test_captures_are_stored_once_and_a_bad_one_does_not_cost_the_rest_of_its_batch(fleet):
    good = encode_capture(model="scaler", version=1, accelerator="cpu", scored_on="local",
                          inputs={"x": np.ones((1, 4), np.float32)}, outputs={"y": np.ones((1, 4), np.float32)})
    bad = {**good, "inputs": [{**good["inputs"][0], "b64": "!!"}]}
    payload = batch((1, "capture", good), (2, "capture", bad), (3, "heartbeat", {"uptime_s": 1}))
    topic = topics.device_topic("dev-1", "telemetry")
    fleet.handlers.handle(topic, payload)
    fleet.handlers.handle(topic, payload)  # redelivered after a reconnect
    assert [c["seq"] for c in capture_store.list_captures(db=fleet.db)] == [1]
    assert [r["kind"] for r in telemetry_store.query(db=fleet.db, device_id="dev-1")] == ["heartbeat"]
    assert fleet.handlers.malformed.by_kind().get("capture") == 2


def test_a_capture_with_an_unbounded_shape_is_counted_malformed_and_the_rest_of_its_batch_is_stored(fleet, caplog):
    good = encode_capture(model="scaler", version=1, accelerator="cpu", scored_on="local",
                          inputs={"x": np.ones((1, 4), np.float32)}, outputs={})
    huge = {**good, "inputs": [{**good["inputs"][0], "shape": [0, 2**70], "b64": ""}]}
    payload = batch((1, "capture", huge), (2, "capture", good), (3, "heartbeat", {"uptime_s": 1}))
    fleet.handlers.handle(topics.device_topic("dev-1", "telemetry"), payload)
    assert [c["seq"] for c in capture_store.list_captures(db=fleet.db)] == [2]
    assert [r["kind"] for r in telemetry_store.query(db=fleet.db, device_id="dev-1")] == ["heartbeat"]
    assert fleet.handlers.malformed.by_kind().get("capture") == 1
    assert "Traceback" not in caplog.text


def test_hard_examples_are_listed_apart_by_their_reason_and_a_reason_that_is_not_a_name_is_refused(fleet):
    def capture(**extra) -> dict:
        return encode_capture(model="scaler", version=1, accelerator="cpu", scored_on="cloud",
                              inputs={"x": np.ones((1, 4), np.float32)}, outputs={}, **extra)

    sampled, hard = capture(), capture(reason="low_confidence")
    payload = batch((1, "capture", sampled), (2, "capture", hard), (3, "capture", {**hard, "reason": "x" * 500}))
    fleet.handlers.handle(topics.device_topic("dev-1", "telemetry"), payload)
    assert [(c["seq"], c["reason"]) for c in capture_store.list_captures(db=fleet.db, reason="low_confidence")] == [
        (2, "low_confidence")]
    assert [c["seq"] for c in capture_store.list_captures(db=fleet.db)] == [1, 2]
    assert fleet.handlers.malformed.by_kind().get("capture") == 1
