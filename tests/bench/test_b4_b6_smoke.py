"""B4 (fan-out) and B6 (capacity) at reduced size: they run end to end; no timing is asserted."""

from __future__ import annotations

import sqlite3
from datetime import timedelta

import pytest

from benchmarks import b4_fanout, b6_capacity
from fleet_protocol.timestamps import to_iso
from fleet_server.clock import utc_now


@pytest.mark.slow
def test_b4_every_device_gets_the_bundle_and_each_chunk_is_published_about_once(tmp_path):
    result = b4_fanout.run(devices=20, mb=1.0, workdir=tmp_path, publish=False)
    edge = result["edgefleet"]
    assert edge["chunk_publishes"] >= result["chunks"]
    assert edge["publishes_per_chunk"] < 3, "the server published chunks once per device instead of once per round"
    assert result["bare"]["delivered_bytes"] >= result["bundle_bytes"] * 20
    verify = result["verification"]
    assert verify["chunks"] == result["chunks"] and verify["ratio"] > 0 and verify["decrypt_cost"] > 0
    assert verify["ratio"] == verify["sha256_median_ms_per_mb"] / verify["decrypt_verify_median_ms_per_mb"]
    assert "bare `hashlib.sha256` over the same bytes" in b4_fanout._verify_row(result)
    assert "| cost, no target |" in b4_fanout._decrypt_row(result)


@pytest.mark.slow
def test_b6_ramps_past_its_first_steps_with_every_device_online_and_every_heartbeat_stored(tmp_path):
    result = b6_capacity.run(steps=(10,), then_every=10, max_devices=30, period_s=1.0, hold_periods=3,
                             per_process=20, workdir=tmp_path, publish=False)
    assert result["ramp"] == [10, 20, 30]
    assert [step["devices"] for step in result["steps"]] == [10, 20, 30]
    assert all(step["held"] and not step["failed"] for step in result["steps"]), result["steps"]
    assert result["held_devices"] == 30
    assert result["stopped"] == "the ramp reached its last step"
    last = result["steps"][-1]
    assert last["heartbeat_delay_s"]["count"] > 0 and last["heartbeat_delay_s"]["p99"] <= result["delay_bound_s"]
    assert set(last["cpu_percent"]) == {"server", "broker", "simulators"}
    assert "| 30 devices held (stopped the ramp reached its last step); at 30:" in b6_capacity._row(result)


def test_b6_ramp_continues_past_the_target_until_its_maximum():
    assert b6_capacity.ramp((1000, 2500, 5000, 10000), 5000, 22_000) == [1000, 2500, 5000, 10000, 15000, 20000]
    assert b6_capacity.ramp((1000, 2500), 0, 100_000) == [1000, 2500]


def test_b6_ramp_stops_before_a_step_that_passes_a_limit_and_names_it():
    last = {"devices": 10_000, "simulator_rss_mb_per_1k": 1.0, "step_s": 60.0}
    fits = dict(elapsed_s=0.0, max_s=3600.0, broker_files=10_010, broker_limit=20_000, sim_limit=20_000,
                per_process=2500)
    assert b6_capacity.why_not(last, 15_000, **fits) is None
    assert b6_capacity.why_not(last, 20_000, **fits).startswith("file descriptors: 20,000 connections")
    assert b6_capacity.why_not(last, 15_000, **{**fits, "sim_limit": 5000}).startswith("file descriptors: 2,500")
    assert b6_capacity.why_not(last, 15_000, **{**fits, "elapsed_s": 3500.0}).startswith("time: ")
    huge = {**last, "simulator_rss_mb_per_1k": 1e9}
    assert b6_capacity.why_not(huge, 15_000, **fits).startswith("memory: ")


def test_b6_a_step_with_delayed_heartbeats_does_not_hold(tmp_path):
    db = tmp_path / "fleet.db"
    conn = sqlite3.connect(db)
    conn.executescript("CREATE TABLE devices (id TEXT, status TEXT);"
                       "CREATE TABLE telemetry (device_id TEXT, seq INTEGER, ts TEXT, kind TEXT, data TEXT, "
                       "received TEXT);")
    now = utc_now()
    conn.execute("INSERT INTO devices VALUES ('d1', 'online')")
    conn.execute("INSERT INTO telemetry VALUES ('d1', 1, ?, 'heartbeat', '{\"uptime_s\": 1}', ?)",
                 (to_iso(now - timedelta(seconds=25)), to_iso(now)))
    conn.commit()
    conn.close()
    since = to_iso(now - timedelta(seconds=5))
    slow = b6_capacity.check_server(db, ["d1"], 30.0, since=since, delay_bound_s=20.0)
    assert slow["heartbeat_delay_s"]["p99"] == 25 and slow["failed"] == ["heartbeat delay p99 over 20 s"]
    assert not slow["held"]
    assert b6_capacity.check_server(db, ["d1"], 30.0, since=since, delay_bound_s=30.0)["held"]
