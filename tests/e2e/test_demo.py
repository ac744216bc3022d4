"""The README's main command works: `edgefleet demo` builds, deploys and prints a prediction."""

from __future__ import annotations

import subprocess
import sys

from tests.support.net import free_port


def test_demo_runs_server_broker_and_devices_and_prints_a_prediction(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "edgefleet_cli.main", "demo", "--once", "--workdir", str(tmp_path / "demo"),
         "--port", str(free_port()), "--broker-port", str(free_port())],
        capture_output=True, text=True, timeout=240, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "edgefleet demo is running" in out
    assert "admin token" in out
    assert "demo-cpu-1 http://127.0.0.1:" in out  # its scoring API, where feedback and /metrics go
    assert "sample prediction from demo-cpu-1 (iris-classifier)" in out
    assert "['setosa', 'versicolor', 'virginica']" in out
    assert out.count("online") == 3
