"""The A/B decision's statistics against scipy and published values, and the sentences it may and may not say."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from fleet_server import ab_verdict
from fleet_server.ab_verdict import class_shift, rows_per_group, two_proportion_test, verdict, wilson


def test_wilson_interval_matches_published_values():
    # Newcombe (1998), Statistics in Medicine 17:857, table I: 81/263 -> 0.2553..0.3662; 0/10 -> 0..0.2775
    low, high = wilson(81, 263)
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)
    low, high = wilson(0, 10)
    assert low == 0.0 and round(high, 4) == 0.2775
    assert wilson(0, 0) is None


def test_two_proportion_test_equals_chi_square_on_the_two_by_two_table():
    for k1, n1, k2, n2 in ((90, 100, 80, 100), (510, 1000, 480, 1000), (3, 40, 9, 41)):
        z, p = two_proportion_test(k1, n1, k2, n2)
        chi2 = stats.chi2_contingency([[k1, n1 - k1], [k2, n2 - k2]], correction=False)
        assert p == pytest.approx(chi2.pvalue, rel=1e-9)
        assert z ** 2 == pytest.approx(chi2.statistic, rel=1e-9)
        assert (z > 0) == (k1 / n1 > k2 / n2)
    assert two_proportion_test(10, 10, 20, 20) == (0.0, 1.0)  # both perfect: nothing to tell apart


def test_rows_per_group_is_the_textbook_sample_size():
    # Fleiss, Levin & Paik: p1 = 0.60, p2 = 0.50, two-sided alpha 0.05, power 0.80 -> 388 per group (no correction)
    assert rows_per_group(0.60, 0.50, 0.05) == 388
    bigger = rows_per_group(0.91, 0.90, 0.05)
    assert bigger > rows_per_group(0.95, 0.90, 0.05) > 0


def test_a_shift_in_answers_by_class_is_found_and_equal_mixes_are_not():
    assert class_shift({"a": 500, "b": 500}, {"a": 300, "b": 700}) < 1e-6
    assert class_shift({"a": 500, "b": 500}, {"a": 505, "b": 495}) > 0.5
    assert class_shift({"a": 10}, {"a": 12}) is None, "one class: nothing to compare"


def row(version, weight, *, labelled=0, correct=0, requests=1000, errors=0, outputs=None, p95=None):
    return {"version": version, "weight": weight, "requests": requests, "answered": requests - errors,
            "errors": errors, "labelled": labelled, "correct": correct, "outputs": outputs or {},
            "latency_p95_us": p95}


def test_the_better_version_is_named_only_when_its_test_passes():
    decided = verdict([row(2, 50, labelled=1200, correct=1020), row(3, 50, labelled=1180, correct=1077)], 2, "iris")
    (comparison,) = decided["comparisons"]
    assert comparison["better"] == 3 and comparison["p_value"] < 0.05
    assert decided["sentence"].startswith("v3 is better at 95 %: accuracy 91.3 % vs 85.0 %")

    close = verdict([row(2, 50, labelled=1200, correct=1080), row(3, 50, labelled=1180, correct=1070)], 2, "iris")
    (comparison,) = close["comparisons"]
    assert comparison["better"] is None and comparison["p_value"] >= 0.05
    assert close["sentence"].startswith("not enough data yet: about ")
    assert "better" not in close["sentence"]
    assert comparison["more_requests"] > 0


def test_more_requests_needed_follow_the_power_estimate_weights_and_labelling_rate():
    # 90 % vs 86 %: rows_per_group says how many labelled rows each needs; v3 gets a quarter of the traffic and
    # one request in ten is labelled, so the requests needed are what v3 lacks, times 10, times 4.
    rows = [row(2, 75, labelled=300, correct=270, requests=3000), row(3, 25, labelled=100, correct=86, requests=1000)]
    (comparison,) = verdict(rows, 2, "iris")["comparisons"]
    needed = rows_per_group(0.86, 0.90, 0.05)
    assert comparison["more_requests"] == math.ceil((needed - 100) * 10 * 4)
    assert f"about {comparison['more_requests']:,} more requests needed" in verdict(rows, 2, "iris")["sentence"]


def test_too_few_labels_never_name_a_winner_however_large_the_difference():
    tiny = verdict([row(2, 50, labelled=10, correct=1), row(3, 50, labelled=10, correct=10)], 2, "iris")
    (comparison,) = tiny["comparisons"]
    assert comparison["p_value"] < 0.05 and comparison["better"] is None
    assert tiny["sentence"].startswith("not enough data yet")


def test_several_variants_are_each_tested_at_a_bonferroni_level():
    # p is about 0.04 for each variant: enough alone, not for two comparisons at once (0.025 each)
    rows = [row(1, 34, labelled=1000, correct=800), row(2, 33, labelled=1000, correct=836),
            row(3, 33, labelled=1000, correct=836)]
    result = verdict(rows, 1, "iris")
    assert result["alpha_per_comparison"] == pytest.approx(0.025)
    assert all(0.025 < c["p_value"] < 0.05 and c["better"] is None for c in result["comparisons"])
    single = verdict(rows[:2], 1, "iris")
    assert single["comparisons"][0]["better"] == 2


def test_without_labels_the_page_says_what_it_can_and_cannot_decide():
    rows = [row(2, 50, errors=2, outputs={"0": 500, "1": 500}, p95=120.0),
            row(3, 50, errors=40, outputs={"0": 300, "1": 700}, p95=98.0)]
    result = verdict(rows, 2, "iris")
    (comparison,) = result["comparisons"]
    sentence = result["sentence"]
    assert comparison["kind"] == "no_labels" and comparison["better"] is None
    assert sentence.startswith("no labels yet for v3 and v2, so neither is better on accuracy")
    assert "POST /v2/models/iris/feedback" in sentence
    assert "v3 fails more requests at 95 %" in sentence and comparison["error_p_value"] < 0.05
    assert "answers by class differ" in sentence and comparison["class_shift_p_value"] < 0.05
    assert "p95 latency 98 µs vs 120 µs (not tested)" in sentence

    same = verdict([row(2, 50, errors=2, outputs={"0": 500, "1": 500}),
                    row(3, 50, errors=3, outputs={"0": 505, "1": 495})], 2, "iris")["sentence"]
    assert "no significant difference" in same and "do not differ significantly" in same
    assert "fails more" not in same

    one_side = verdict([row(2, 50, labelled=500, correct=450), row(3, 50)], 2, "iris")
    assert one_side["sentence"].startswith("no labels yet for v3, so neither is better on accuracy")
    assert one_side["comparisons"][0]["better"] is None


def test_without_requests_the_sentence_names_the_versions_that_have_none():
    one_idle = verdict([row(2, 50), row(3, 50, requests=0)], 2, "iris")["sentence"]
    assert "no requests counted yet for v3, so their errors cannot be compared" in one_idle, one_idle
    both_idle = verdict([row(2, 50, requests=0), row(3, 50, requests=0)], 2, "iris")["sentence"]
    assert "no requests counted yet for v3 and v2," in both_idle, both_idle


def test_a_deployment_without_variants_has_nothing_to_decide():
    assert verdict([row(1, 100)], 1, "iris")["sentence"].startswith("nothing to compare")
    assert ab_verdict.CONFIDENCE == 0.95
