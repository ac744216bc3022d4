"""Refused messages are counted every time but logged at most once per topic per interval."""

from __future__ import annotations

import logging

from fleet_server.handlers import MalformedCounter


def test_refusals_are_counted_by_kind_and_logged_once_per_topic_per_interval(caplog):
    counter = MalformedCounter(log_every_s=60)
    with caplog.at_level(logging.WARNING, logger="fleet_server.handlers"):
        for _ in range(50):
            counter.add("edgefleet/v1/devices/a/telemetry", "telemetry", "not JSON")
        counter.add("edgefleet/v1/devices/b/status", "status", "not JSON")
    assert counter.total == 51 and counter.by_kind() == {"telemetry": 50, "status": 1}
    assert len(caplog.records) == 2


def test_a_topic_logs_again_after_the_interval_with_the_number_suppressed(caplog, monkeypatch):
    clock = [100.0]
    monkeypatch.setattr("fleet_server.handlers.time.monotonic", lambda: clock[0])
    counter = MalformedCounter(log_every_s=10)
    with caplog.at_level(logging.WARNING, logger="fleet_server.handlers"):
        for _ in range(4):
            counter.add("t", "status", "bad")
        clock[0] += 11
        counter.add("t", "status", "bad again")
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and messages[1].endswith("bad again (3 more since the last report)")
