"""B4 (fan-out) and B6 (capacity) at reduced size: they run end to end; no timing is asserted."""

from __future__ import annotations

import pytest

from benchmarks import b4_fanout, b6_capacity

pytestmark = pytest.mark.slow


def test_b4_every_device_gets_the_bundle_and_each_chunk_is_published_about_once(tmp_path):
    result = b4_fanout.run(devices=20, mb=1.0, workdir=tmp_path, publish=False)
    edge = result["edgefleet"]
    assert edge["chunk_publishes"] >= result["chunks"]
    assert edge["publishes_per_chunk"] < 3, "the server published chunks once per device instead of once per round"
    assert result["bare"]["delivered_bytes"] >= result["bundle_bytes"] * 20
    assert result["verification"]["chunks"] == result["chunks"] and result["verification"]["ratio"] > 0


def test_b6_ramp_holds_small_steps_with_every_device_online_and_every_heartbeat_stored(tmp_path):
    result = b6_capacity.run(steps=(10, 30), period_s=1.0, hold_periods=3, per_process=20, workdir=tmp_path,
                             publish=False)
    assert [step["devices"] for step in result["steps"]] == [10, 30]
    assert all(step["held"] for step in result["steps"]), result["steps"]
    assert result["held_devices"] == 30
