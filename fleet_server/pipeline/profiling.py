"""Latency, throughput and peak memory of an ONNX model on each onnxruntime provider of this host.

Each provider is measured in its own subprocess (``python -m
fleet_server.pipeline.profiling MODEL SAMPLES PROVIDER RUNS``) so that one
provider's memory does not count against the next: peak memory is the
growth of the child's peak RSS (``VmHWM``) over its RSS just before the
session is created, read from ``/proc/self/status`` (Linux only). Each run scores the whole sample as one
call; latency percentiles are per call, throughput is rows per second.

Only providers that compute locally are measured (``AzureExecutionProvider``,
a remote call, is skipped); the CPU-only onnxruntime wheel has just
``CPUExecutionProvider``. Numbers are integers (microseconds, KiB, rows/s)
because they are stored with the model version. TFLite is not profiled here.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fleet_protocol.errors import BadDataError

from .samples import dump_samples

SKIPPED_PROVIDERS = {"AzureExecutionProvider"}
WARMUP_RUNS = 5
MAX_RUNS = 10_000
CHILD_TIMEOUT_S = 300


def local_providers() -> list[str]:
    import onnxruntime as ort

    return [p for p in ort.get_available_providers() if p not in SKIPPED_PROVIDERS]


def profile_onnx(data: bytes, samples: dict[str, np.ndarray], *, runs: int = 200) -> dict:
    """``{"providers": {name: measurement}, "host": ..., "runs": ..., "batch": ...}``."""
    if not 1 <= runs <= MAX_RUNS:
        raise BadDataError(f"runs must be between 1 and {MAX_RUNS}, got {runs}")
    measured = {}
    with tempfile.TemporaryDirectory(prefix="edgefleet-profile-") as tmp:
        model, sample = Path(tmp) / "model.onnx", Path(tmp) / "sample.npz"
        model.write_bytes(data)
        sample.write_bytes(dump_samples(samples))
        for provider in local_providers():
            measured[provider] = _measure_in_child(model, sample, provider, runs)
    return {"providers": measured, "runs": runs, "batch": int(next(iter(samples.values())).shape[0]),
            "host": f"{platform.machine()} {platform.processor() or platform.system()}".strip()}


def _measure_in_child(model: Path, sample: Path, provider: str, runs: int) -> dict:
    command = [sys.executable, "-m", __name__, str(model), str(sample), provider, str(runs)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, check=False)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1][:300]
        raise BadDataError(f"profiling on {provider} failed: {tail}")
    return json.loads(done.stdout)


def measure(model: Path, sample: Path, provider: str, runs: int) -> dict:
    """Run in the child: create the session, warm up, time ``runs`` calls, report integers."""
    import onnxruntime as ort

    arrays = dict(np.load(sample, allow_pickle=False))
    before_kib, _ = _memory_kib()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(model), sess_options=options, providers=[provider])
    for _ in range(WARMUP_RUNS):
        session.run(None, arrays)
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        session.run(None, arrays)
        times[i] = time.perf_counter() - start
    _, peak_kib = _memory_kib()
    batch = next(iter(arrays.values())).shape[0]
    p50, p95, p99 = np.percentile(times, [50, 95, 99]) * 1e6
    return {"p50_us": int(round(p50)), "p95_us": int(round(p95)), "p99_us": int(round(p99)),
            "throughput_per_s": int(round(batch * runs / times.sum())),
            "peak_memory_kib": int(max(0, peak_kib - before_kib))}


def _memory_kib() -> tuple[int, int]:
    """``(current RSS, peak RSS)`` of this process in KiB, from ``/proc/self/status``.

    The peak (``VmHWM``) belongs to this process image, so unlike ``ru_maxrss``
    it is not inherited from the server that started the child.
    """
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


if __name__ == "__main__":
    _model, _sample, _provider, _runs = sys.argv[1:5]
    print(json.dumps(measure(Path(_model), Path(_sample), _provider, int(_runs))))
