"""The CI subset of the benchmarks (B1, B5) at reduced size: they run end to end; no timing is asserted."""

from __future__ import annotations

import pytest

from benchmarks import b1_scoring, b5_memory


def test_b1_agent_scoring_gives_the_bare_session_outputs(tmp_path):
    result = b1_scoring.run(calls=200, cnn_calls=20, workdir=tmp_path, publish=False)
    for model in ("forest", "cnn"):
        assert result[model]["same_outputs"], result[model]
        assert result[model]["calls_per_side"] >= 20


def test_b5_compares_each_agent_state_with_a_bare_process_holding_the_same_libraries_and_models():
    result = b5_memory.run(idle_s=0.5, publish=False)
    idle, loaded = result["idle"], result["loaded"]
    assert loaded["agent_rss_mb"] > idle["agent_rss_mb"] > 0
    # the loaded reference holds every sample module's model in its runtime; the idle one holds none
    assert loaded["modules"] == [m["name"] for m in b5_memory.sample_modules()]
    assert sorted(runtime for runtime, _ in loaded["reference_holds"]) == ["onnx", "tflite"]
    assert loaded["bare_rss_mb"] > idle["bare_rss_mb"] + 10, "the loaded reference must hold onnxruntime and LiteRT"
    for side in (idle, loaded):
        assert side["ratio"] == pytest.approx(side["agent_rss_mb"] / side["bare_rss_mb"])
    rows = b5_memory._rows(result)
    assert f"| {idle['ratio']:.2f}x |" in rows["B5"] and f"| {loaded['ratio']:.2f}x |" in rows["B5-loaded"]


def test_b5_a_state_meets_its_target_only_within_both_the_ratio_and_the_size():
    mb = b5_memory.MB
    assert b5_memory.compare(120 * mb, 100 * mb) == {"agent_rss_mb": 120, "bare_rss_mb": 100,
                                                     "ratio": pytest.approx(1.2), "met": False}  # over 96 MB
    assert b5_memory.compare(90 * mb, 60 * mb)["met"] is False  # 1.5x
    assert b5_memory.compare(90 * mb, 78 * mb)["met"] is True
    assert b5_memory.compare(112 * mb, 78 * mb)["ratio"] == pytest.approx(1.436, abs=1e-3)
