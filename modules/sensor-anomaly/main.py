"""Entry script of the sensor-anomaly module.

The agent calls ``init(context)`` once after the model loads and ``run(inputs)``
per request. The model takes one reading at a time ([1, 8]); ``run`` also
accepts a batch [N, 8] by scoring the rows one by one, and adds an
``is_anomaly`` output (BOOL) from the module's ``threshold_percent`` config
(integer percent, default 50: signed documents carry no floats).
"""

from __future__ import annotations

import numpy as np

INPUT = "sensor_readings"
OUTPUT = "anomaly_score"
N_FEATURES = 8

_model = None
_threshold = 0.5


def init(context) -> None:
    global _model, _threshold
    _model = context.model
    percent = context.config.get("threshold_percent", 50)
    if isinstance(percent, bool) or not isinstance(percent, int) or not 0 < percent < 100:
        raise ValueError(f"config threshold_percent must be an integer between 1 and 99, got {percent!r}")
    _threshold = percent / 100
    context.log.info("sensor-anomaly ready: threshold %.2f", _threshold)


def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    readings = np.asarray(inputs[INPUT], dtype=np.float32)
    if readings.ndim != 2 or readings.shape[1] != N_FEATURES:
        raise ValueError(f"{INPUT} must have shape [N, {N_FEATURES}], got {list(readings.shape)}")
    if readings.shape[0] == 1:
        scores = np.asarray(_model.run({INPUT: readings})[OUTPUT], dtype=np.float32)
    else:
        scores = np.concatenate([np.asarray(_model.run({INPUT: row[None, :]})[OUTPUT], dtype=np.float32)
                                 for row in readings]).reshape(-1, 1)
    return {OUTPUT: scores, "is_anomaly": scores >= _threshold}
