"""B3 (telemetry ingest) and B8 (backlog drain after a broker outage) at reduced size: every record arrives once.

Slow (real Mosquitto, a server, a device process): run with ``pytest -m slow tests/bench``. No timing is asserted;
the comparisons are: B3's figures are medians of the rounds, B8's reference is the server's measured ingest capacity.
"""

from __future__ import annotations

import json
import statistics

import pytest

from benchmarks import b3_telemetry, b8_backlog
from benchmarks.report import RESULTS


@pytest.mark.slow
def test_b3_reports_the_median_of_its_rounds_and_stores_every_record_exactly_once(tmp_path):
    result = b3_telemetry.run(devices=2, records=600, rounds=3, workdir=tmp_path, publish=False)
    edgefleet = result["runs"]["edgefleet"][0]
    assert edgefleet["missing"] == edgefleet["duplicates"] == edgefleet["left_in_outboxes"] == 0, edgefleet
    assert edgefleet["rows_stored"] >= 2 * 600
    assert result["runs"]["bare_sqlite"][0]["rows_stored"] == 2 * 600
    assert result["zero_loss"], result["runs"]
    for side, runs in result["runs"].items():
        rates = [r["records_per_s"] for r in runs]
        assert len(rates) == 3
        assert result["median_records_per_s"][side] == sorted(rates)[1]
        assert result["spread_records_per_s"][side] == b3_telemetry.spread(rates)
    medians = result["median_records_per_s"]
    assert result["ratio_vs_bare_sqlite"] == pytest.approx(medians["edgefleet"] / medians["bare_sqlite"])
    assert result["server_only_ratio_vs_bare_sqlite"] == pytest.approx(medians["server_only"] / medians["bare_sqlite"])
    assert f"| {result['ratio_vs_bare_sqlite']:.2f}x |" in b3_telemetry._rows(result)["B3"]


def test_b3_spread_is_the_range_of_the_rounds_relative_to_their_median():
    assert b3_telemetry.spread([90.0, 100.0, 130.0]) == {"min": 90.0, "max": 130.0, "relative": 0.4}


@pytest.mark.slow
def test_b8_drain_is_compared_with_the_servers_ingest_capacity_and_loses_nothing(tmp_path):
    result = b8_backlog.run(devices=3, rate=5, steady_s=5, outage_min=0.05, capacity_rounds=1, workdir=tmp_path,
                            publish=False)
    assert result["backlog_records"] > 0
    assert result["missing"] == result["duplicates"] == result["dropped_by_outboxes"] == 0, result
    assert result["left_in_outboxes"] == 0
    assert result["zero_loss"]
    capacity = result["capacity"]
    assert capacity["source"] == "measured in this run" and len(capacity["rounds"]) == 1
    # the reference is what the server can ingest, not the rate the devices write at
    assert capacity["records_per_s"] > 2 * result["steady_records_per_s"]
    assert result["ratio"] == pytest.approx(result["drain_records_per_s"] / capacity["records_per_s"])
    assert result["ratio_vs_write_rate"] == pytest.approx(result["drain_records_per_s"]
                                                          / result["steady_records_per_s"])
    assert 0 <= result["restart_to_first_row_s"] <= result["restart_to_drained_s"]
    assert result["met"] == (result["ratio"] >= 0.8)
    assert f"| {result['ratio']:.2f}x (peak " in b8_backlog._row(result)


def test_b8_capacity_from_results_is_the_median_of_b3s_server_alone_with_its_date():
    b3 = json.loads((RESULTS / "B3.json").read_text())
    capacity = b8_backlog.ingest_capacity(None, RESULTS, 0)
    assert capacity["records_per_s"] == b3["median_records_per_s"]["server_only"]
    assert capacity["records_per_s"] == statistics.median(r["records_per_s"] for r in b3["runs"]["server_only"])
    assert capacity["measured"] == b3["measured"]
