"""Pickled scikit-learn estimator → ONNX with skl2onnx.

**Unpickling runs code.** A pickle can execute anything while it loads, so
:func:`sklearn_to_onnx` must only see files from people already trusted to
change the fleet: the API route that calls it needs an operator (or admin)
token, exactly like registering any model. The unpickled object is then
refused unless it is a scikit-learn estimator (a ``BaseEstimator``, pipelines
included) that has been fitted (``n_features_in_``).

The ONNX graph takes one float input ``input`` of shape ``[-1, n_features_in_]``;
classifiers output ``label`` and ``probabilities`` as plain tensors (ZipMap off).
"""

from __future__ import annotations

import io
import pickle

from ..modelinfo import BadModelError


class NotAnEstimatorError(BadModelError):
    code = "not_an_estimator"


def sklearn_to_onnx(data: bytes) -> tuple[bytes, str]:
    """The ONNX bytes of the pickled, fitted scikit-learn estimator in ``data``, and the estimator's class name."""
    from sklearn.base import BaseEstimator
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    try:
        estimator = pickle.load(io.BytesIO(data))  # noqa: S301 - operator-only route, see the module docstring
    except Exception as exc:  # noqa: BLE001 - unpickling raises anything
        raise NotAnEstimatorError(f"the file is not a readable pickle: {type(exc).__name__}: {exc}"[:300]) from None
    if not isinstance(estimator, BaseEstimator):
        raise NotAnEstimatorError(f"the pickle holds a {type(estimator).__module__}.{type(estimator).__qualname__}, "
                                  "not a scikit-learn estimator; only fitted scikit-learn models can be converted")
    features = getattr(estimator, "n_features_in_", None)
    if not isinstance(features, int) or features < 1:
        raise NotAnEstimatorError(f"the {type(estimator).__name__} is not fitted (it has no n_features_in_); "
                                  "fit it before pickling")
    try:
        model = to_onnx(estimator, initial_types=[("input", FloatTensorType([None, features]))],
                        options={"zipmap": False})
    except Exception as exc:  # noqa: BLE001 - skl2onnx raises RuntimeError, NameError, ... for unsupported models
        raise BadModelError(f"skl2onnx cannot convert the {type(estimator).__name__}: {exc}"[:300]) from None
    return model.SerializeToString(), type(estimator).__name__
