"""The soak benchmark: its slope fit, and a short run end to end (slow; no memory figure is asserted)."""

from __future__ import annotations

import pytest

from benchmarks import soak


def test_the_slope_of_a_straight_rss_line_is_its_gradient_in_mb_per_hour():
    times = [0.0, 60.0, 120.0, 180.0]
    assert soak.slope_mb_per_hour(times, [100.0, 100.5, 101.0, 101.5]) == pytest.approx(30.0)
    assert soak.slope_mb_per_hour(times, [80.0, 80.0, 80.0, 80.0]) == 0.0


def test_a_series_counts_as_flat_when_a_day_at_its_anonymous_memory_slope_adds_at_most_a_tenth_of_its_rss():
    # +6 MB/h of anonymous memory after the warm-up (the first sample is warm-up): 144 MB a day on 100 MB
    growing = soak.Series("x", 0, [0.0, 1200.0, 1800.0], [150.0, 100.0, 101.0], [90.0, 60.0, 61.0])
    summary = growing.summary(warmup_s=1000.0)
    assert summary["anon_slope_mb_per_hour"] == pytest.approx(6.0) and not summary["flat"]
    # RSS falling while anonymous memory stays (file pages reclaimed under pressure) is flat
    reclaimed = soak.Series("y", 0, [0.0, 3600.0], [100.0, 60.0], [50.0, 50.4]).summary(warmup_s=0.0)
    assert reclaimed["slope_mb_per_hour"] == pytest.approx(-40.0) and reclaimed["flat"]  # +9.6 MB a day of anon


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_short_soak_samples_every_process_and_keeps_the_fleet_scoring_and_reporting(tmp_path):
    settings = soak.SoakSettings(devices=10, minutes=1.0, sample_s=2.0, warmup_minutes=0.25, heartbeat_s=2.0,
                                 flush_s=1.0, score_every_s=5.0, score_fraction=0.5)
    result = soak.run(settings, workdir=tmp_path, publish=False)
    assert set(result["processes"]) == {"server", "simulated fleet", "real agent", "mosquitto"}
    for summary in result["processes"].values():
        assert summary["samples_after_warmup"] >= 2 and summary["rss_after_warmup_mb"] > 0
    scoring = result["scoring"]
    assert scoring["server_ok"] > 0 and scoring["agent_ok"] > 0 and scoring["simulated_ok"] > 0
    assert scoring["server_failed"] == scoring["agent_failed"] == scoring["simulated_failed"] == 0, scoring
    assert result["telemetry_devices"] == settings.devices + 1  # every simulated device and the real agent
    assert "| soak |" in soak.readme_row(result)
