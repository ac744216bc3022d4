"""Drift's pure parts: the reference's bins, the device's counts, window validation, and the alert rule's
false-alarm and detection rates over many seeded windows."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest

from edgefleet_runtime.drift import DriftCounter
from fleet_protocol import drift
from fleet_protocol.errors import BadDataError, MessageError
from fleet_server.drift import stats

WINDOWS, WINDOW_ROWS = 500, 1000


class Answer:
    def __init__(self, outputs: dict):
        self.outputs = outputs


def reference(rng: np.random.Generator) -> drift.Reference:
    x = rng.normal(size=(5000, 4))
    return drift.build_reference({"x": x}, {"y": x * 2})


def window(counter: DriftCounter, x: np.ndarray) -> dict:
    score = counter.wrap(lambda inputs: Answer({"y": inputs["x"] * 2}))
    for rows in np.array_split(x, 10):
        score({"x": rows})
    return counter.take()


def drifted(ref: drift.Reference, doc: dict) -> set[str]:
    return {f.name for f, row in zip(ref.features, doc["counts"])
            if stats.compare(f.expected, np.asarray(row))["drifted"]}


def test_baseline_windows_raise_almost_no_alarm_and_shifted_ones_are_caught_for_the_shifted_feature_only():
    rng = np.random.default_rng(18)
    ref = reference(rng)
    counter = DriftCounter(ref, "m:1")
    false_alarms = detected = wrong = 0
    for _ in range(WINDOWS):
        false_alarms += bool(drifted(ref, window(counter, rng.normal(size=(WINDOW_ROWS, 4)))))
        shifted = rng.normal(size=(WINDOW_ROWS, 4))
        shifted[:, 2] += 0.5  # half a standard deviation
        found = drifted(ref, window(counter, shifted))
        detected += {"x[2]", "y[2]"} <= found
        wrong += bool(found - {"x[2]", "y[2]"})
    print(f"false-alarm rate {false_alarms / WINDOWS:.4f}, detection rate {detected / WINDOWS:.4f}, "
          f"other features flagged {wrong / WINDOWS:.4f} ({WINDOWS} windows of {WINDOW_ROWS} rows each)")
    assert false_alarms / WINDOWS <= 0.01
    assert detected / WINDOWS >= 0.99
    assert wrong / WINDOWS <= 0.01


def test_a_feature_that_turns_to_nan_drifts_and_its_output_with_it():
    rng = np.random.default_rng(7)
    ref = reference(rng)
    x = rng.normal(size=(WINDOW_ROWS, 4))
    x[:, 3] = np.nan  # a dead sensor
    assert drifted(ref, window(DriftCounter(ref, "m:1"), x)) == {"x[3]", "y[3]"}


def test_too_few_rows_are_never_judged_however_far_they_moved():
    ref = reference(np.random.default_rng(1))
    feature = ref.features[0]
    moved = np.zeros(feature.bins + 2, np.int64)
    moved[-3] = stats.MIN_ROWS - 1  # every row in the last bin
    result = stats.compare(feature.expected, moved)
    assert result["psi"] > stats.THRESHOLDS["psi"] and not result["drifted"]


def test_every_request_is_counted_when_many_threads_score_at_once():
    ref = drift.build_reference({"x": np.random.default_rng(6).normal(size=(200, 2))}, {})
    counter = DriftCounter(ref, "m:1")
    score = counter.wrap(lambda inputs: Answer({}))
    requests, threads, interval = 5000, 8, sys.getswitchinterval()

    def client() -> None:
        for _ in range(requests):
            score({"x": np.zeros((1, 2))})

    sys.setswitchinterval(1e-6)  # switch threads as often as possible, between any two bytecodes
    try:
        running = [threading.Thread(target=client) for _ in range(threads)]
        for thread in running:
            thread.start()
        for thread in running:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert counter.take()["rows"] == requests * threads


def test_nan_and_out_of_range_values_are_counted_apart_and_every_row_adds_up():
    ref = drift.build_reference({"x": np.arange(200.0).reshape(100, 2)}, {})
    counter = DriftCounter(ref, "m:1")
    counter.wrap(lambda inputs: Answer({}))({"x": np.array([[np.nan, -1e9], [np.inf, 50.0], [3.0, 1e9]])})
    doc = counter.take()
    first, second = doc["counts"]
    assert (first[-2], first[-1]) == (1, 1) and (second[-2], second[-1]) == (0, 2)
    assert doc["rows"] == 3 and sum(first[:-1]) == sum(second[:-1]) == 3
    drift.check_counts(ref, doc["counts"], doc["rows"])


def test_a_discrete_column_gets_one_bin_per_value():
    values = np.repeat([0.0, 1.0, 2.0], [50, 30, 20])
    ref = drift.build_reference({"x": values.reshape(-1, 1)}, {})
    assert ref.features[0].edges == (1.0, 2.0) and ref.features[0].expected == (50, 30, 20)


@pytest.mark.parametrize("baseline, moved", [
    (np.repeat([0.0, 1.0], [910, 90]), np.repeat([0.0, 1.0], [500, 500])),  # a rare class becomes common
    (np.r_[np.zeros(950), np.arange(1.0, 51.0)], np.r_[np.zeros(500), np.arange(1.0, 501.0)]),  # zero-inflated
    (np.full(200, 3.0), np.full(600, 4.0)),  # a constant that changes
], ids=["binary", "zero-inflated", "constant"])
def test_a_column_whose_quantiles_coincide_still_gets_bins_and_its_drift_is_caught(baseline, moved):
    ref = drift.build_reference({"x": baseline.reshape(-1, 1)}, {})
    counter = DriftCounter(ref, "m:1")
    counter.wrap(lambda inputs: Answer({}))({"x": moved.reshape(-1, 1)})
    assert ref.features[0].bins >= 2 and drifted(ref, counter.take()) == {"x[0]"}


def test_an_image_input_is_refused_at_registration_with_what_drift_covers():
    with pytest.raises(BadDataError, match="2-D tabular inputs.*shape \\[200, 3, 8, 8\\]"):
        drift.build_reference({"image": np.zeros((200, 3, 8, 8), np.float32)}, {})


def test_an_output_of_rank_three_is_left_out_and_named():
    ref = drift.build_reference({"x": np.random.default_rng(2).normal(size=(200, 2))}, {"maps": np.zeros((200, 2, 2))})
    assert ref.skipped == ("maps",) and [f.side for f in ref.features] == ["input", "input"]


def test_a_window_that_does_not_fit_its_reference_is_refused():
    ref = reference(np.random.default_rng(3))
    good = window(DriftCounter(ref, "m:1"), np.random.default_rng(4).normal(size=(100, 4)))
    parsed = drift.parse_window(good)
    drift.check_counts(ref, parsed["counts"], parsed["rows"])
    for broken, message in ((dict(good, model_ref="m"), "name:version"),
                            (dict(good, reference="zz" * 8), "16 hex"),
                            (dict(good, counts=[[1.5, 0, 0]]), "counts must be"),
                            (dict(good, counts=good["counts"][:-1]), "7 features")):
        with pytest.raises(MessageError, match=message):
            doc = drift.parse_window(broken)
            drift.check_counts(ref, doc["counts"], doc["rows"])
    inflated = [row[:] for row in good["counts"]]
    inflated[0][0] += 1
    with pytest.raises(MessageError, match="adding up to 100 rows"):
        drift.check_counts(ref, inflated, good["rows"])


def test_a_window_cannot_claim_more_rows_than_a_device_scores_nor_more_out_of_range_values_than_rows():
    ref = reference(np.random.default_rng(3))
    huge = drift.MAX_WINDOW_ROWS + 1  # 1,024 windows of 2**53 rows each overflowed the server's int64 sums
    counts = [[huge] + [0] * (f.bins - 1) + [0, 0] for f in ref.features]
    with pytest.raises(MessageError, match="rows must be at most"):
        drift.parse_window({"model_ref": "m:1", "reference": ref.id, "rows": huge, "counts": counts})
    good = window(DriftCounter(ref, "m:1"), np.random.default_rng(4).normal(size=(100, 4)))
    outside = [row[:] for row in good["counts"]]
    outside[0][-1] = 10**6  # shown as an out-of-range rate of 1,000,000 %
    with pytest.raises(MessageError, match="out_of_range counting some of the binned ones"):
        drift.check_counts(ref, outside, good["rows"])


def test_a_reference_that_is_not_one_is_refused_naming_the_field():
    doc = reference(np.random.default_rng(5)).to_dict()
    doc["features"][0]["edges"] = [2.0, 1.0]
    with pytest.raises(BadDataError, match="x\\[0\\].*increasing"):
        drift.Reference.from_dict(doc)
    doc = reference(np.random.default_rng(5)).to_dict()
    doc["rows"] = 10  # fewer than the baseline counts: its NaN share would be negative
    with pytest.raises(BadDataError, match="add up to more than its 10 rows"):
        drift.Reference.from_dict(doc)
