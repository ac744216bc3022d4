"""B3 (telemetry ingest) and B8 (backlog drain after a broker outage) at reduced size: every record arrives once.

Slow (real Mosquitto, a server, a device process): run with ``pytest -m slow tests/bench``. No timing is asserted.
"""

from __future__ import annotations

import pytest

from benchmarks import b3_telemetry, b8_backlog

pytestmark = pytest.mark.slow


def test_b3_every_preloaded_record_is_stored_exactly_once_on_each_side(tmp_path):
    result = b3_telemetry.run(devices=3, records=600, rounds=1, workdir=tmp_path, publish=False)
    edgefleet = result["runs"]["edgefleet"][0]
    assert edgefleet["missing"] == edgefleet["duplicates"] == edgefleet["left_in_outboxes"] == 0, edgefleet
    assert edgefleet["rows_stored"] >= 3 * 600
    assert result["runs"]["bare_sqlite"][0]["rows_stored"] == 3 * 600
    assert result["zero_loss"], result["runs"]


def test_b8_records_written_during_a_broker_outage_are_all_stored_once_after_it(tmp_path):
    result = b8_backlog.run(devices=3, rate=5, steady_s=5, outage_min=0.05, workdir=tmp_path, publish=False)
    assert result["backlog_records"] > 0
    assert result["missing"] == result["duplicates"] == result["dropped_by_outboxes"] == 0, result
    assert result["left_in_outboxes"] == 0
    assert result["zero_loss"]
