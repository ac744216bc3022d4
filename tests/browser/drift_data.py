"""Drift data for the dashboard: a model registered with a baseline and two devices' windows over 30 minutes.

The windows are counted by the agent's own :class:`edgefleet_runtime.drift.DriftCounter` from seeded rows and published
over MQTT as telemetry, as agents send them: ``edge-a`` sees the baseline for 20 minutes, then ``x[1]`` shifted by
two standard deviations; ``edge-b`` sees the baseline throughout.
"""

from __future__ import annotations

import io
from datetime import timedelta

import numpy as np

from edgefleet_runtime.drift import DriftCounter
from fleet_protocol import drift, messages, topics
from fleet_protocol.messages import TelemetryBatch, TelemetryRecord
from fleet_protocol.timestamps import to_iso
from fleet_server.clock import utc_now
from tests.server.builders import tiny_onnx
from tests.support.net import wait_for

from .fleet_data import Seeder

MINUTES, SHIFT_FROM_MINUTE, ROWS_PER_WINDOW = 30, 20, 400


class _Answer:
    def __init__(self, outputs: dict):
        self.outputs = outputs


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _windows(reference: drift.Reference, rng: np.random.Generator, shifted: bool) -> list[dict]:
    counter = DriftCounter(reference, "scaler:1")
    score = counter.wrap(lambda inputs: _Answer({"y": inputs["x"] * 2}))
    windows = []
    for minute in range(MINUTES):
        x = rng.normal(size=(ROWS_PER_WINDOW, 4)).astype(np.float32)
        if shifted and minute >= SHIFT_FROM_MINUTE:
            x[:, 1] += 2.0
        score({"x": x})
        windows.append(counter.take())
    return windows


def populate_drift(url: str, token: str, broker_url: str) -> None:
    rng = np.random.default_rng(18)
    with Seeder(url, token, broker_url, "browser-drift-seeder") as seed:
        baseline = rng.normal(size=(2000, 4)).astype(np.float32)
        seed.post("/api/models/scaler", files={"file": ("scaler.onnx", tiny_onnx()),
                                               "baseline": ("baseline.npy", _npy(baseline))})
        reference = drift.Reference.from_dict(seed.api.get("/api/models/scaler/versions/1/drift/reference")
                                              .json()["reference"])
        start = utc_now() - timedelta(minutes=MINUTES)
        for device_id, site, shifted in (("edge-a", "north", True), ("edge-b", "south", False)):
            seed.online(device_id, "generic-cpu", {"site": site})
            records = tuple(TelemetryRecord(seq, to_iso(start + timedelta(minutes=seq)), drift.KIND, window)
                            for seq, window in enumerate(_windows(reference, rng, shifted), start=1))
            seed.device.publish(topics.device_topic(device_id, "telemetry"),
                                messages.encode(TelemetryBatch(device_id, f"box-{device_id}", records).to_dict()))
        wait_for(lambda: sum(g["windows"] for g in seed.api.get("/api/models/scaler/versions/1/drift").json()
                             ["groups"]) == 2 * MINUTES, timeout=30, what="both devices' drift windows")
