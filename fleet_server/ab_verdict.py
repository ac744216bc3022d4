"""The decision of an A/B comparison: which version is better, at what confidence, or how much more data it needs.

Pure statistics over the comparison's rows (:mod:`fleet_server.variants`); no I/O.

- **Accuracy** of a version is ``correct / labelled`` over the labelled rows
  that the split routed to it (feedback, :mod:`fleet_server.feedback`), with
  a **Wilson score interval** (:func:`wilson`): unlike the normal ("Wald")
  interval it stays inside [0, 1] and keeps its coverage near 0 % and
  100 %, where good models live.
- **The test** between the main version (the baseline) and each variant is
  the **two-proportion z-test** with the pooled proportion
  (:func:`two_proportion_test`, two-sided). Why this one: the question is
  whether two accuracies (two binomial proportions) differ, and it is the
  standard test for that with one degree of freedom; it equals Pearson's
  chi-square on the 2×2 table of correct/wrong counts without continuity
  correction (the unit tests check that against ``scipy.stats.chi2_contingency``),
  and unlike the chi-square it has a sign, so it says which is better. With
  several variants each is compared with the baseline at ``alpha / m``
  (Bonferroni), so "at 95 %" holds for the whole page. The normal
  approximation needs enough rows: below :data:`MIN_LABELLED` labelled rows
  a version is never declared better.
- **Power**: without a significant difference, :func:`rows_per_group` gives
  the labelled rows per version that a test at the same level detects the
  observed difference with with :data:`POWER` (80 %), and the sentence turns
  the missing rows into requests at the split's weights and the labelling
  rate seen so far ("about N more requests needed").
- **Without labels** nothing says which version is right. The page can still
  decide whether the **error rates** differ (the same two-proportion test on
  errors / requests) and whether the **answers by class** differ (Pearson's
  chi-square test of homogeneity on the class counts, :func:`class_shift`): a
  shift that only labels can judge. Latency is shown (from the merged
  sketches), not tested: a sketch holds quantiles, not the samples a test
  would need.

A sentence never names a better version unless its test passed.
"""

from __future__ import annotations

import math

from scipy import stats

CONFIDENCE = 0.95
POWER = 0.80
MIN_LABELLED = 30  # labelled rows per version before the normal approximation (and a winner) is trusted
MIN_EFFECT = 0.01  # the difference the power estimate aims at while the accuracies are still equal


def wilson(correct: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """The Wilson score interval of ``correct / n``; None without rows."""
    if n <= 0:
        return None
    ci = stats.binomtest(correct, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def two_proportion_test(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float]:
    """``(z, two-sided p)`` of the pooled two-proportion z-test of ``k1/n1`` against ``k2/n2``."""
    pooled = (k1 + k2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 0.0, 1.0
    z = (k1 / n1 - k2 / n2) / se
    return z, float(2 * stats.norm.sf(abs(z)))


def rows_per_group(p1: float, p2: float, alpha: float, power: float = POWER) -> int:
    """Rows per group for the two-sided two-proportion test at ``alpha`` to find ``p1 != p2`` with ``power``."""
    if p1 == p2:
        p2 = p1 - MIN_EFFECT if p1 >= MIN_EFFECT else p1 + MIN_EFFECT
    z_alpha, z_beta = stats.norm.isf(alpha / 2), stats.norm.ppf(power)
    mean = (p1 + p2) / 2
    root = z_alpha * math.sqrt(2 * mean * (1 - mean)) + z_beta * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return math.ceil(root ** 2 / (p1 - p2) ** 2)


def class_shift(a: dict[str, int], b: dict[str, int]) -> float | None:
    """p of Pearson's chi-square test that two versions answer the same mix of classes; None if untestable."""
    classes = sorted(set(a) | set(b))
    table = [[a.get(c, 0) for c in classes], [b.get(c, 0) for c in classes]]
    if len(classes) < 2 or not sum(table[0]) or not sum(table[1]):
        return None
    return float(stats.chi2_contingency(table, correction=False).pvalue)


def verdict(rows: list[dict], baseline: int, module: str) -> dict:
    """The decision for every variant against the ``baseline`` version, and one plain sentence for the page."""
    base = next((r for r in rows if r["version"] == baseline), None)
    others = [r for r in rows if r["version"] != baseline]
    if base is None or not others:
        return {"baseline": baseline, "confidence": CONFIDENCE, "comparisons": [],
                "sentence": "nothing to compare: this deployment is not an A/B split"}
    alpha = (1 - CONFIDENCE) / len(others)
    total_weight = sum(r["weight"] for r in rows) or 1
    comparisons = [_compare(base, other, alpha, total_weight, module) for other in others]
    return {"baseline": baseline, "confidence": CONFIDENCE, "alpha_per_comparison": alpha,
            "test": "two-proportion z-test (pooled, two-sided) on labelled rows; Bonferroni across variants",
            "comparisons": comparisons, "sentence": " ".join(c["sentence"] for c in comparisons)}


def _compare(base: dict, other: dict, alpha: float, total_weight: int, module: str) -> dict:
    found = {"version": other["version"], "baseline": base["version"], "better": None, "p_value": None,
             "more_requests": None}
    if base["labelled"] and other["labelled"]:
        return {**found, **_by_accuracy(base, other, alpha, total_weight)}
    return {**found, **_without_labels(base, other, alpha, module)}


def _by_accuracy(base: dict, other: dict, alpha: float, total_weight: int) -> dict:
    a, b = other, base
    acc_a, acc_b = a["correct"] / a["labelled"], b["correct"] / b["labelled"]
    z, p = two_proportion_test(a["correct"], a["labelled"], b["correct"], b["labelled"])
    enough = min(a["labelled"], b["labelled"]) >= MIN_LABELLED
    level = _level()
    if enough and p < alpha:
        better, worse = (a, b) if z > 0 else (b, a)
        return {"kind": "accuracy", "better": better["version"], "p_value": p,
                "sentence": f"v{better['version']} is better at {level}: accuracy "
                            f"{_pct(better['correct'] / better['labelled'])} vs "
                            f"{_pct(worse['correct'] / worse['labelled'])} on {better['labelled']:,} and "
                            f"{worse['labelled']:,} labelled rows (two-proportion z-test, {_p(p)})."}
    needed = max(rows_per_group(acc_a, acc_b, alpha), MIN_LABELLED)
    more = _more_requests([a, b], needed, total_weight)
    return {"kind": "accuracy", "p_value": p, "more_requests": more,
            "sentence": f"not enough data yet: about {more:,} more requests needed to tell v{a['version']} "
                        f"({_pct(acc_a)} accurate on {a['labelled']:,} labelled rows) from v{b['version']} "
                        f"({_pct(acc_b)} on {b['labelled']:,}) at {level} ({_p(p)} so far)."}


def _more_requests(rows: list[dict], needed: int, total_weight: int) -> int:
    """Requests to the split until every row has ``needed`` labelled rows, at its weight and labelling rate."""
    more = 0.0
    for row in rows:
        missing = needed - row["labelled"]
        if missing <= 0:
            continue
        per_request = row["labelled"] / row["answered"] if row["answered"] else 1.0  # labelled rows per request
        share = row["weight"] / total_weight
        more = max(more, missing / max(per_request, 1e-9) / max(share, 1e-9))
    if more <= 0:  # enough rows by the estimate, yet no difference: the difference is smaller than it looked
        more = sum(row["answered"] for row in rows) or needed
    return math.ceil(more)


def _without_labels(base: dict, other: dict, alpha: float, module: str) -> dict:
    a, b = other, base
    missing = " and ".join(f"v{r['version']}" for r in (a, b) if not r["labelled"])
    parts = [f"no labels yet for {missing}, so neither is better on accuracy "
             f"(send them to POST /v2/models/{module}/feedback)"]
    error_p = None
    if a["requests"] and b["requests"]:
        z, error_p = two_proportion_test(a["errors"], a["requests"], b["errors"], b["requests"])
        rates = f"{_pct(a['errors'] / a['requests'])} vs {_pct(b['errors'] / b['requests'])}"
        if error_p < alpha:
            worse = a if z > 0 else b
            parts.append(f"v{worse['version']} fails more requests at {_level()} ({rates}, {_p(error_p)})")
        else:
            parts.append(f"errors {rates}: no significant difference ({_p(error_p)})")
    else:
        idle = " and ".join(f"v{r['version']}" for r in (a, b) if not r["requests"])
        parts.append(f"no requests counted yet for {idle}, so their errors cannot be compared")
    shift_p = class_shift(a.get("outputs") or {}, b.get("outputs") or {})
    if shift_p is not None:
        parts.append(f"answers by class differ ({_p(shift_p)}): a shift only labels can judge" if shift_p < alpha
                     else f"answers by class do not differ significantly ({_p(shift_p)})")
    if a.get("latency_p95_us") is not None and b.get("latency_p95_us") is not None:
        parts.append(f"p95 latency {a['latency_p95_us']:,.0f} µs vs {b['latency_p95_us']:,.0f} µs (not tested)")
    return {"kind": "no_labels", "error_p_value": error_p, "class_shift_p_value": shift_p,
            "sentence": "; ".join(parts) + "."}


def _level() -> str:
    return f"{CONFIDENCE * 100:.0f} %"


def _pct(x: float) -> str:
    return f"{x * 100:.1f} %"


def _p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"
