"""``edgefleet agent enroll --json``: what a script needs (device id, config and state paths) as JSON."""

from __future__ import annotations

import json
import subprocess
import sys

from edge_agent.config import load_config


def test_enroll_json_names_the_device_its_config_and_state_dir(tls_fleet, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "edgefleet_cli.main", "agent", "enroll", "--server", tls_fleet.server.url, "--token",
         tls_fleet.enrollment_token("cam-7"), "--state-dir", str(tmp_path / "state"), "--config",
         str(tmp_path / "etc" / "agent.toml"), "--json"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer == {"device_id": "cam-7", "config": str(tmp_path / "etc" / "agent.toml"),
                      "state_dir": str(tmp_path / "state")}
    assert load_config(tmp_path / "etc" / "agent.toml").device_id == "cam-7"
