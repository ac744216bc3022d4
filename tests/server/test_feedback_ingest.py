"""Feedback records from devices: stored once per (device, model, request id) however often they arrive; a
malformed one is counted and refused without losing the rest of its batch."""

from __future__ import annotations

from fleet_protocol import feedback, messages, topics
from fleet_protocol.messages import TelemetryBatch, TelemetryRecord
from tests.support.postgres import BOTH_ENGINES

pytestmark = BOTH_ENGINES  # the store-touching tests run on SQLite and PostgreSQL

TS = "2026-01-01T00:00:00Z"


def record(seq: int, request_id: str, predicted: list[str], labels: list[str], version: int = 2) -> TelemetryRecord:
    data = feedback.encode_record(model="iris", version=version, request_id=request_id, scored_on="local",
                                  split=True, predicted=predicted, labels=labels)
    return TelemetryRecord(seq, TS, feedback.KIND, data)


def batch(outbox_id: str, *records: TelemetryRecord) -> bytes:
    return messages.encode(TelemetryBatch("cam-1", outbox_id, tuple(records)).to_dict())


def test_feedback_for_the_same_request_counts_once_and_a_malformed_record_loses_nothing_else(fleet):
    topic = topics.device_topic("cam-1", "telemetry")
    bad = TelemetryRecord(3, TS, feedback.KIND, {"model": "iris", "version": 2, "request_id": "r9",
                                                  "scored_on": "local", "split": True, "pairs": [["a"]]})
    first = batch("box-1", record(1, "r1", ["setosa", "virginica"], ["setosa", "setosa"]), bad,
                  record(2, "r2", ["versicolor"], ["versicolor"], version=1))
    fleet.handlers.handle(topic, first)
    fleet.handlers.handle(topic, first)  # a redelivery
    # the same request labelled again, in a later batch (a client that sent its label twice after a restart)
    fleet.handlers.handle(topic, batch("box-2", record(1, "r1", ["setosa", "virginica"], ["virginica", "virginica"])))

    assert fleet.handlers.malformed.by_kind() == {"feedback": 2}, "the bad record, in each delivery"
    by_version = {v["version"]: v for v in fleet.feedback.field_accuracy("iris")}
    assert (by_version[2]["labelled"], by_version[2]["correct"]) == (2, 1)
    assert by_version[2]["confusion"] == {"setosa": {"setosa": 1, "virginica": 1}}
    assert (by_version[1]["labelled"], by_version[1]["correct"]) == (1, 1)
    assert by_version[2]["accuracy_low"] < 0.5 < by_version[2]["accuracy_high"]
