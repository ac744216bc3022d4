"""B2 (agent REST vs MLServer) and B7 (hot swap under load) at reduced size; no timing is asserted.

Both drive load with ``wrk`` (``make bench-deps``); B2 builds MLServer's own
venv on first use (a network install), and records why when it cannot.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from benchmarks import b2_serving, b7_hot_swap

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (make bench-deps)")]


def test_b2_agent_and_mlserver_give_the_same_prediction_and_answer_every_request_over_rest_and_grpc(tmp_path):
    result = b2_serving.run(1, (1, 2), warmup_s=1, workdir=tmp_path, publish=False, parallel_workers=(0,), runs=1,
                            grpc=True)
    assert result["prediction"]["same"], result["prediction"]
    for key in ("c1", "c2", "grpc-c1", "grpc-c2"):
        row = result[key]
        assert row["agent"]["requests"] > 0 and row["agent"]["failed"] == 0, row["agent"]
        if "mlserver_unavailable" not in result:
            assert row["mlserver-pw0"]["failed"] == 0, row["mlserver-pw0"]
            assert row["throughput_ratio"] > 0


def test_b2_baseline_agent_serves_in_the_same_rounds_and_is_judged_against_the_same_mlserver(tmp_path):
    own_code = Path(b2_serving.__file__).resolve().parents[1]  # an A/A: the baseline runs this very code
    result = b2_serving.run(1, (1,), warmup_s=1, workdir=tmp_path / "run", publish=False, parallel_workers=(0,),
                            runs=1, baselines={"same": own_code})
    assert result["prediction"]["same"] and set(result["prediction"]["outputs"]) >= {"agent", "agent-same"}
    row = result["c1"]
    assert row["agent-same"]["requests"] > 0 and row["agent-same"]["failed"] == 0, row["agent-same"]
    if "mlserver_unavailable" not in result:
        reference = row[row["reference"]]
        assert row["agent-same"]["throughput_ratio"] == row["agent-same"]["requests_per_s"] / reference["requests_per_s"]
        assert row["agent-same"]["p99_ratio"] == row["agent-same"]["p99_ms"] / reference["p99_ms"]


def test_b7_hot_swap_under_load_fails_no_request(tmp_path):
    result = b7_hot_swap.run("forest", swaps=1, load_s=0.5, bare_times=2, workdir=tmp_path, publish=False)
    assert result["failed_requests"] == 0, (result["http"], result["infer"])
    assert result["versions"] == [1, 2]
    assert result["infer"]["calls_by_version"].get("2", 0) > 0  # the new version did take over
    assert len(result["swap_ms"]["installed_to_serving"]) == 1
