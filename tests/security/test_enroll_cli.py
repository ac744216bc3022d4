"""The enrollment commands for scripts and people: ``agent enroll --json`` (device id, config and state paths) and
``device enroll`` naming the one-command install."""

from __future__ import annotations

import json
import subprocess
import os
import sys

from edge_agent.config import load_config
from tests.support.fleet import ADMIN_TOKEN


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


def test_device_enroll_prints_the_one_command_install_with_the_token(tls_fleet):
    env = {**os.environ, "EDGEFLEET_SERVER": tls_fleet.server.url, "EDGEFLEET_TOKEN": ADMIN_TOKEN, "COLUMNS": "300"}
    result = subprocess.run([sys.executable, "-m", "edgefleet_cli.main", "device", "enroll", "--name", "cam-8"],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    token = next(line.split()[-1] for line in result.stdout.splitlines() if line.strip().startswith("token"))
    assert f"curl -fsSL {tls_fleet.server.url}/install.sh | sudo sh -s -- --token {token}" in result.stdout
