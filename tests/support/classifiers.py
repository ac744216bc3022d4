"""A data set on which a small and a bigger classifier disagree, both as ONNX (skl2onnx, no ZipMap).

``make_classification`` with three classes of three clusters each: a
logistic regression (the device's model, ~68 % accurate) cannot draw the
cluster boundaries that a 40-tree random forest (the cloud's, ~84 %) can.
Both models have the input ``X`` (FP32, 12 features) and the outputs
``label`` (INT64) and ``probabilities`` (FP32, one column per class), so
the forest's rows can stand in for the regression's.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

SEED = 7
FEATURES = 12


@dataclass(frozen=True)
class Disagreeing:
    small_onnx: bytes
    big_onnx: bytes
    x_test: np.ndarray
    y_test: np.ndarray


def _onnx(model, x: np.ndarray) -> bytes:
    from skl2onnx import to_onnx

    return to_onnx(model, x[:1], options={id(model): {"zipmap": False}},
                   target_opset={"": 17, "ai.onnx.ml": 3}).SerializeToString()


@cache
def disagreeing(test_rows: int = 600) -> Disagreeing:
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    x, y = make_classification(n_samples=2400 + test_rows, n_features=FEATURES, n_informative=8, n_redundant=2,
                               n_classes=3, n_clusters_per_class=3, class_sep=1.0, random_state=SEED)
    x = x.astype(np.float32)
    x_train, y_train = x[:2400], y[:2400]
    small = LogisticRegression(max_iter=500).fit(x_train, y_train)
    big = RandomForestClassifier(n_estimators=40, max_depth=10, random_state=SEED, n_jobs=1).fit(x_train, y_train)
    return Disagreeing(_onnx(small, x_train), _onnx(big, x_train), x[2400:], y[2400:])
