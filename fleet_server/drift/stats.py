"""PSI, Jensen–Shannon distance and a KS statistic of observed bin counts against the reference's.

All three read only bin counts, which is all a device sends:

- **PSI** ``sum((a - e) * ln(a / e))`` over the bins, proportions floored at
  :data:`FLOOR` so an empty bin does not make it infinite (Evidently floors
  the same way);
- **Jensen–Shannon distance** (``scipy.spatial.distance.jensenshannon``,
  natural log, so between 0 and sqrt(ln 2) ≈ 0.83);
- **KS**: the largest gap between the two cumulative distributions at the
  bin edges (the two-sample Kolmogorov–Smirnov statistic of the binned
  data, a lower bound of the raw data's), with its asymptotic p-value.

A feature **drifts** when any statistic reaches its threshold
(:data:`THRESHOLDS`) and the merged counts hold at least :data:`MIN_ROWS`
rows; with fewer rows nothing is judged (the statistics of a small sample
are too noisy: PSI's expectation with no drift is about (bins - 1) / rows).
NaN is one more bin, whose baseline share is that of the baseline's values
that were not finite (usually none), so a feature that turns to NaN (a dead
sensor) drifts like one that moves; NaN and out-of-range counts are also
reported as rates beside the statistics.
A feature has **settled** (an open alert may clear) only when every
statistic is under :data:`CLEAR_FRACTION` of its threshold: without that
margin a feature sitting at a threshold raised an alert on every other window.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial.distance import jensenshannon
from scipy.special import kolmogorov

FLOOR = 1e-4
MIN_ROWS = 500
THRESHOLDS = {"psi": 0.2, "js": 0.1, "ks": 0.1}
CLEAR_FRACTION = 0.8


def compare(expected: list[int] | np.ndarray, observed: np.ndarray, *, baseline_nan: int = 0) -> dict:
    """Statistics of one feature: ``observed`` is the merged window row (bins..., nan, out_of_range);
    ``baseline_nan`` how many baseline rows of the feature were not finite."""
    counts = np.asarray(observed[:-1], dtype=np.float64)  # the bins, then NaN as one more
    nan, outside = int(observed[-2]), int(observed[-1])
    reference = np.append(np.asarray(expected, dtype=np.float64), baseline_nan)
    rows = int(counts.sum())
    result = {"rows": rows, "nan_rate": _rate(nan, rows), "out_of_range_rate": _rate(outside, rows)}
    if not rows:
        return {**result, "psi": None, "js": None, "ks": None, "ks_p": None, "drifted": False}
    e = np.maximum(reference / reference.sum(), FLOOR)
    a = np.maximum(counts / rows, FLOOR)
    psi = float(np.sum((a - e) * np.log(a / e)))
    js = float(jensenshannon(reference / reference.sum(), counts / rows))
    ks = float(np.max(np.abs(np.cumsum(reference) / reference.sum() - np.cumsum(counts) / rows)))
    effective = rows * reference.sum() / (rows + reference.sum())
    values = {"psi": round(psi, 4), "js": round(js, 4), "ks": round(ks, 4),
              "ks_p": float(f"{kolmogorov(math.sqrt(effective) * ks):.3g}")}
    judged = rows >= MIN_ROWS
    return {**result, **values, "drifted": judged and any(values[k] >= t for k, t in THRESHOLDS.items())}


def _rate(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def settled(result: dict) -> bool:
    """Whether a judged feature (:func:`compare`, at least :data:`MIN_ROWS` rows) is back well under every
    threshold."""
    return result["rows"] >= MIN_ROWS and all(result[k] < t * CLEAR_FRACTION for k, t in THRESHOLDS.items())
