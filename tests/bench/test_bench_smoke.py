"""The CI subset of the benchmarks (B1, B5) at reduced size: they run end to end; no timing is asserted."""

from __future__ import annotations

from benchmarks import b1_scoring, b5_memory


def test_b1_agent_scoring_gives_the_bare_session_outputs(tmp_path):
    result = b1_scoring.run(calls=200, cnn_calls=20, workdir=tmp_path, publish=False)
    for model in ("forest", "cnn"):
        assert result[model]["same_outputs"], result[model]
        assert result[model]["calls_per_side"] >= 20


def test_b5_measures_the_agent_before_and_after_loading_modules(tmp_path):
    result = b5_memory.run(idle_s=0.5, publish=False)
    assert result["agent_loaded_rss_mb"] > result["agent_idle_rss_mb"] > 0
    assert result["bare_rss_mb"] > 0
