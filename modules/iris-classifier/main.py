"""Entry script of the iris-classifier module.

The agent calls ``init(context)`` once after the model loads and ``run(inputs)``
per request. ``run`` passes the measurements to the model and adds a
``class_name`` output (BYTES) naming the predicted species.
"""

from __future__ import annotations

import numpy as np

CLASS_NAMES = ("setosa", "versicolor", "virginica")

_model = None


def init(context) -> None:
    global _model
    _model = context.model
    context.log.info("iris-classifier ready: input %s", context.model.inputs[0][0])


def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    outputs = dict(_model.run(inputs))
    labels = np.asarray(outputs["label"]).astype(np.int64)
    outputs["class_name"] = np.array([CLASS_NAMES[i] for i in labels.ravel()], dtype=object).reshape(labels.shape)
    return outputs
