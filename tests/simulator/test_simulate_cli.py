"""``edgefleet simulate``: help, refusals, and a short JSON run of devices spread over two processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from fleet_server.keys import new_signing_key


def simulate(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgefleet_cli.main", "simulate", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "COLUMNS": "200"})


def test_help_names_every_option():
    result = simulate("--help")
    assert result.returncode == 0
    for option in ("--devices", "--profiles", "--broker", "--trusted-key", "--processes", "--fault", "--seed",
                   "--duration", "--dir", "--json"):
        assert option in result.stdout


def test_a_bad_fault_is_refused_before_anything_starts(tmp_path):
    key = new_signing_key().public_key.to_hex()
    result = simulate("--devices", "2", "--broker", "mqtt://127.0.0.1:1", "--trusted-key", key, "--fault",
                      "explode=1", "--dir", str(tmp_path))
    assert result.returncode == 2
    assert "bad fault 'explode=1'" in result.stderr
    assert not any(tmp_path.iterdir())


def test_short_json_run_connects_every_device_over_two_processes_and_sends_telemetry(mosquitto, tmp_path):
    key = new_signing_key().public_key.to_hex()
    result = simulate("--devices", "40", "--processes", "2", "--broker", mosquitto.url, "--trusted-key", key,
                      "--profiles", "generic-cpu:0.7,raspberry-pi-5:0.3", "--duration", "6", "--dir",
                      str(tmp_path / "sim"), "--set", "heartbeat_interval_s=1", "--set",
                      "telemetry_flush_interval_s=0.5", "--json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert {line["event"] for line in lines[:-1]} == {"progress"}
    summary = lines[-1]
    assert summary["event"] == "summary"
    assert (summary["devices_total"], summary["processes"], summary["failed_workers"]) == (40, 2, [])
    assert summary["all_connected_s"] is not None and summary["connected_at_end"] == 40
    assert summary["telemetry_sent"] > 0 and summary["outbox_pending"] == 0
    assert len(list((tmp_path / "sim").iterdir())) == 40  # one state directory per device
