"""install.sh's own rules, in seconds: the token stays out of every command line, a relative --root stays under
the current directory, and no file it writes is writable by others whatever the caller's umask.

The script runs for real (``sh``, in a throwaway ``--root`` with ``--no-systemd``) over an environment already
in place whose ``bin/edgefleet`` records how it was called and writes what enrollment would. That is a stand-in
for the agent, not for the script: the real venv, pip and enrollment are ``tests/e2e/test_install_script.py``.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent import __version__
from fleet_server.device_install import render_install_script

TOKEN = "pi-1.s3cret-enrollment-token"
RECORDING_AGENT = """#!/bin/sh
[ "$1" = --help ] && exit 0
printf '%s\\n' "$0" "$@" >"$RECORD/argv"
printf '%s' "${EDGEFLEET_ENROLL_TOKEN-}" >"$RECORD/token"
while [ $# -gt 0 ]; do
    case $1 in --state-dir) state=$2; shift 2 ;; --config) config=$2; shift 2 ;; *) shift ;; esac
done
mkdir -p "$state/identity" && echo key >"$state/identity/device.key"
printf 'device_id = "pi-1"\\n' >"$config"
echo '{"device_id": "pi-1"}'
"""


@pytest.fixture
def script(tmp_path) -> Path:
    path = tmp_path / "install.sh"
    path.write_text(render_install_script("http://fleet.example:8080"))
    return path


def env_in_place(root: Path) -> None:
    """``/opt/edgefleet/envs/VERSION`` as a finished install leaves it, with the recording agent."""
    env = root / "opt/edgefleet/envs" / __version__
    (env / "bin").mkdir(parents=True)
    (env / "bin/edgefleet").write_text(RECORDING_AGENT)
    (env / "bin/edgefleet").chmod(0o755)
    (env / ".complete").touch()


def install(script: Path, *args: str, cwd: Path, umask: int = 0o022) -> subprocess.CompletedProcess:
    record = cwd / "record"
    record.mkdir(exist_ok=True)
    result = subprocess.run(["sh", str(script), "--no-systemd", "--python", sys.executable, *args], cwd=cwd,
                            capture_output=True, text=True, timeout=60, env=os.environ | {"RECORD": str(record)},
                            preexec_fn=lambda: os.umask(umask))
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_enrollment_token_reaches_the_agent_by_environment_never_by_command_line(script, tmp_path):
    env_in_place(tmp_path / "root")
    install(script, "--root", str(tmp_path / "root"), "--token", TOKEN, cwd=tmp_path)
    assert "enroll" in (tmp_path / "record/argv").read_text()
    assert TOKEN not in (tmp_path / "record/argv").read_text()
    assert (tmp_path / "record/token").read_text() == TOKEN


def test_token_file_is_read_for_the_token_and_kept_off_every_command_line(script, tmp_path):
    env_in_place(tmp_path / "root")
    (tmp_path / "token").write_text(TOKEN + "\n")
    result = install(script, "--root", str(tmp_path / "root"), "--token-file", "token", cwd=tmp_path)
    assert (tmp_path / "record/token").read_text() == TOKEN and TOKEN not in (tmp_path / "record/argv").read_text()
    assert "device:  pi-1" in result.stdout


def test_relative_root_is_taken_under_the_current_directory(script, tmp_path):
    relative = f"{tmp_path.name}-demo/root"  # a name no one else uses: where a broken script writes it under /
    env_in_place(tmp_path / relative)
    install(script, "--root", relative, "--token", TOKEN, cwd=tmp_path)
    assert (tmp_path / relative / "etc/edgefleet/agent.toml").is_file()
    assert (tmp_path / relative / "etc/systemd/system/edgefleet-agent.service").is_file()


def test_nothing_written_is_writable_by_others_whatever_the_callers_umask(script, tmp_path):
    root = tmp_path / "root"
    env_in_place(root)
    install(script, "--root", str(root), "--token", TOKEN, cwd=tmp_path, umask=0)
    for path in ("etc/edgefleet", "etc/systemd/system", "etc/systemd/system/edgefleet-agent.service"):
        mode = (root / path).stat().st_mode
        assert not mode & (stat.S_IWGRP | stat.S_IWOTH), f"{path} is {oct(mode)}"


def test_script_cut_short_in_transit_runs_nothing(script, tmp_path):
    root = tmp_path / "root"
    env_in_place(root)
    text = script.read_text()
    script.write_text(text[:text.index("# --- 3. user, unit, service")])  # curl | sh after a dropped connection
    result = subprocess.run(["sh", str(script), "--root", str(root), "--no-systemd", "--python", sys.executable,
                             "--token", TOKEN], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                            env=os.environ | {"RECORD": str(tmp_path)})
    assert result.returncode != 0
    assert not (root / "etc").exists() and not (tmp_path / "argv").exists()  # not enrolled, nothing written
