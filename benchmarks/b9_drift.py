"""B9: what drift sketches cost: µs added per request on the scoring path, and telemetry bytes per device-hour.

The 50-tree iris forest of B1 with a drift reference from 1,000 baseline rows
(4 input columns, the label and 3 probabilities: 8 features). Per request:
the same onnxruntime score function, bare and wrapped by
:class:`edgefleet_runtime.drift.DriftCounter` (interleaved in rounds; p50: the
append and copy every request pays), and the binning of 256 pending
requests that one request in 256 pays, divided by 256 (the fastest of 50
repeats: on a shared machine a mean mostly measures the neighbours).
Bytes: the canonical JSON of one telemetry record of kind ``drift`` as the
outbox batches it, times one window per heartbeat (30 s by default: 120 an
hour) for a device that scores something in every heartbeat.

    python -m benchmarks.b9_drift [--calls N]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnxruntime as ort

from benchmarks.models import random_forest_onnx
from benchmarks.report import write_result
from edgefleet_runtime.drift import DriftCounter
from fleet_protocol import drift
from fleet_protocol.canonical import canonical_json
from fleet_server.drift.baseline import reference_from_arrays

HEARTBEATS_PER_HOUR = 3600 // 30


class _Result:
    __slots__ = ("outputs",)

    def __init__(self, outputs: dict):
        self.outputs = outputs


def _timed(call, feed: dict, calls: int) -> list[int]:
    clock, samples = time.perf_counter_ns, []
    for _ in range(calls):
        start = clock()
        call(feed)
        samples.append(clock() - start)
    return samples


def run(calls: int = 20_000, rounds: int = 10) -> dict:
    model, feed = random_forest_onnx()
    (name, row), = feed.items()
    baseline = np.random.default_rng(9).normal(row, 0.5, size=(1000, row.shape[1])).astype(np.float32)
    reference = reference_from_arrays(model, "onnx", {name: baseline})
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    run_ = session.run

    def bare(inputs: dict) -> _Result:
        return _Result(dict(zip(names, run_(None, inputs))))

    counter = DriftCounter(reference, "forest:1")
    wrapped = counter.wrap(bare)
    plain, sketched = [], []
    for _ in range(rounds):
        plain += _timed(bare, feed, calls // rounds)
        sketched += _timed(wrapped, feed, calls // rounds)
    window = counter.take()
    pending = [({name: row.copy()}, bare(feed).outputs) for _ in range(256)]
    binning_ns = min(_timed(lambda _: counter._bin(pending), feed, 50)) / 256
    counter.take()
    record = {"data": window, "kind": drift.KIND, "seq": 123456, "ts": "2026-12-03T12:00:00Z"}
    record_bytes = len(canonical_json(record))
    result = {"features": len(reference.features), "calls_per_side": len(plain),
              "bare_p50_us": float(np.percentile(plain, 50)) / 1000,
              "drift_p50_us": float(np.percentile(sketched, 50)) / 1000,
              "added_p50_us": (float(np.percentile(sketched, 50)) - float(np.percentile(plain, 50))) / 1000,
              "binning_per_request_us": binning_ns / 1000,
              "added_per_request_us": (float(np.percentile(sketched, 50)) - float(np.percentile(plain, 50))
                                       + binning_ns) / 1000,
              "rows_counted": window["rows"], "window_record_bytes": record_bytes,
              "bytes_per_device_hour": record_bytes * HEARTBEATS_PER_HOUR}
    write_result("B9", result)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000, help="calls per side")
    out = run(parser.parse_args().calls)
    print(f"{out['features']} features: bare p50 {out['bare_p50_us']:.2f} µs, with drift p50 "
          f"{out['drift_p50_us']:.2f} µs (added p50 {out['added_p50_us']:+.2f} µs, binning "
          f"{out['binning_per_request_us']:.2f} µs per request: {out['added_per_request_us']:+.2f} µs per request in "
          f"all); {out['rows_counted']} rows counted; one window {out['window_record_bytes']} bytes, "
          f"{out['bytes_per_device_hour']} bytes per device-hour at one window per 30 s heartbeat")
