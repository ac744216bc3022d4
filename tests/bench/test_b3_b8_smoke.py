"""B3 (telemetry ingest) and B8 (backlog drain after a broker outage) at reduced size: every record arrives once.

Slow (real Mosquitto, a server, a device process): run with ``pytest -m slow tests/bench``. No timing is asserted;
the comparisons are: B3's figures are medians of the rounds, B8's reference is the server's measured ingest capacity.
"""

from __future__ import annotations

import json
import sqlite3
import statistics

import pytest

from benchmarks import b3_telemetry, b8_backlog
from benchmarks.report import RESULTS
from benchmarks.telemetry_rig import GUARANTEE, RowCounter, loss_check


@pytest.mark.slow
def test_b3_reports_the_median_of_its_rounds_and_stores_every_record_exactly_once(tmp_path):
    result = b3_telemetry.run(devices=2, records=600, rounds=3, workdir=tmp_path, publish=False)
    edgefleet = result["runs"]["edgefleet"][0]
    assert edgefleet["missing"] == edgefleet["extra_stored"] == edgefleet["left_in_outboxes"] == 0, edgefleet
    assert edgefleet["guarantee"] == GUARANTEE and edgefleet["stored_once"] and edgefleet["zero_loss"]
    assert edgefleet["rows_stored"] == edgefleet["issued"] >= 2 * 600  # the preloaded records and heartbeats
    assert edgefleet["delivered"] - edgefleet["duplicates_delivered"] == edgefleet["rows_stored"], edgefleet
    server_only = result["runs"]["server_only"][0]
    assert server_only["issued"] == server_only["rows_stored"] == 2 * 600, server_only
    assert server_only["delivered"] - server_only["duplicates_delivered"] == 2 * 600
    bare = result["runs"]["bare_sqlite"][0]
    assert bare["rows_stored"] == 2 * 600
    assert bare["delivered_messages"] - bare["duplicate_messages_delivered"] == bare["distinct_messages"] == bare[
        "messages"], bare
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
    assert result["missing"] == result["extra_stored"] == result["dropped_by_outboxes"] == 0, result
    assert result["left_in_outboxes"] == 0
    assert result["rows_stored"] == result["issued"] > result["backlog_records"]
    assert result["delivered"] - result["duplicates_delivered"] == result["rows_stored"]  # redeliveries not stored
    assert result["stored_once"] and result["guarantee"] == GUARANTEE
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


# --- loss_check's verdicts can fail: a real SQLite table shaped like the server's, the delivery counts given ---


def _rows(tmp_path, seqs, *, primary_key: bool = True) -> RowCounter:
    ddl = b3_telemetry.TELEMETRY_DDL if primary_key else b3_telemetry.TELEMETRY_DDL.replace(
        ",\n    PRIMARY KEY (device_id, outbox_id, seq)", "")
    with sqlite3.connect(tmp_path / "fleet.db") as db:
        db.executescript(ddl)
        db.executemany("INSERT INTO telemetry VALUES ('dev-0', 'ob-1', ?, 't', 'k', '{}', 't')", [(s,) for s in seqs])
    return RowCounter(tmp_path / "fleet.db")


REPORT = {"dev-0": {"outbox_id": "ob-1", "last_seq": 3, "left": 0, "dropped": 0}}


def test_loss_check_counts_redeliveries_apart_from_rows_stored_once(tmp_path):
    checks = loss_check(_rows(tmp_path, [1, 2, 3]), REPORT, lambda: (5, 2), settle_s=0)
    assert checks["guarantee"] == "at-least-once delivery, exactly-once storage"
    counts = checks["issued"], checks["delivered"], checks["duplicates_delivered"], checks["rows_stored"]
    assert counts == (3, 5, 2, 3)
    assert checks["zero_loss"] and checks["stored_once"]


def test_loss_check_zero_loss_fails_when_an_issued_record_is_not_stored(tmp_path):
    checks = loss_check(_rows(tmp_path, [1, 3]), REPORT, lambda: (2, 0), settle_s=0)
    assert checks["missing"] == 1 and not checks["zero_loss"]


def test_loss_check_zero_loss_fails_when_a_row_of_another_outbox_stands_in(tmp_path):
    checks = loss_check(_rows(tmp_path, [1, 2, 3]), {"dev-0": {**REPORT["dev-0"], "outbox_id": "ob-2"}},
                        lambda: (3, 0), settle_s=0)
    assert checks["missing"] == 3 and checks["extra_stored"] == 3 and not checks["zero_loss"]


def test_loss_check_stored_once_fails_when_a_record_is_stored_twice(tmp_path):
    checks = loss_check(_rows(tmp_path, [1, 2, 3, 2], primary_key=False), REPORT, lambda: (4, 0), settle_s=0)
    assert checks["extra_stored"] == 1 and checks["missing"] == 0 and not checks["stored_once"]


def test_loss_check_stored_once_fails_when_deliveries_minus_duplicates_differ_from_rows(tmp_path):
    checks = loss_check(_rows(tmp_path, [1, 2, 3]), REPORT, lambda: (4, 0), settle_s=0)  # one redelivery not counted
    assert checks["extra_stored"] == 0 and not checks["stored_once"]
