"""install.sh's own rules, in seconds: it lints clean, its unit verifies, it refuses what it cannot do, the token
stays out of every command line, a relative --root stays under the current directory, no file it writes is
writable by others whatever the caller's umask, a download cut short runs nothing, and root runs nothing the
agent user can change.

The script runs for real (``sh``, in a throwaway ``--root`` with ``--no-systemd``) over an environment already
in place whose ``bin/edgefleet`` records how it was called and writes what enrollment would. That is a stand-in
for the agent, not for the script: the real venv, pip and enrollment are ``tests/e2e/test_install_script.py``.
A test is not root and has no edgefleet user, so the systemd host (``runuser``, ``systemctl``, ``chown``, ``id``)
is a set of stand-ins on ``PATH`` too: ``runuser`` records the user it was asked for and runs the command, and
every program of the stand-in environment logs which user it ran as.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent import __version__
from fleet_server.device_install import render_install_script

TOKEN = "pi-1.s3cret-enrollment-token"
RECORDING_AGENT = """#!/bin/sh
printf '%s %s %s\\n' "${RUNUSER_AS:-caller}" "${0##*/}" "$1" >>"$RECORD/runs"
[ "${0##*/}" = edgefleet ] && [ "$1" != --help ] || exit 0
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


# What a systemd host has and a test lacks, each recording what it was asked (bin/NAME: script).
SYSTEMD_HOST = {
    "runuser": """#!/bin/sh
[ "$1" = -u ] && [ "$3" = -- ] || { echo "runuser: unexpected $*" >&2; exit 2; }
RUNUSER_AS=$2 && export RUNUSER_AS && shift 3 && exec "$@"
""",
    "id": '#!/bin/sh\n[ "$1" = edgefleet ]\n',  # the user exists: only `id edgefleet` is asked under --root
    "chown": '#!/bin/sh\nprintf "%s\\n" "$*" >>"$RECORD/chown"\n',
    "systemctl": '#!/bin/sh\n[ "$1" != is-active ] || [ "$2" = --quiet ] || echo active\n',
    # --python: python -m venv makes the stand-in environment, anything else is the real Python
    "python3": f"""#!/bin/sh
if [ "$1" = -m ] && [ "$2" = venv ]; then
    printf '%s python -m\\n' "${{RUNUSER_AS:-caller}}" >>"$RECORD/runs"
    mkdir -p "$3/bin" && for name in edgefleet pip python; do cp "$RECORD/../agent" "$3/bin/$name"; done
    exit 0
fi
exec {sys.executable} "$@"
""",
}


@pytest.fixture
def systemd_host(tmp_path) -> Path:
    """A directory of stand-ins for a root shell on a systemd host, to put first on PATH."""
    host = tmp_path / "host"
    host.mkdir()
    for name, text in SYSTEMD_HOST.items():
        (host / name).write_text(text)
        (host / name).chmod(0o755)
    (tmp_path / "agent").write_text(RECORDING_AGENT)
    (tmp_path / "agent").chmod(0o755)
    return host


def install(script: Path, *args: str, cwd: Path, umask: int = 0o022,
            host: Path | None = None) -> subprocess.CompletedProcess:
    """The script under --no-systemd, or with ``host``'s stand-ins as a root shell on a systemd host."""
    record = cwd / "record"
    record.mkdir(exist_ok=True)
    env = os.environ | {"RECORD": str(record)}
    if host is None:
        args = ("--no-systemd", "--python", sys.executable, *args)
    else:
        args = ("--python", str(host / "python3"), *args)
        env["PATH"] = f"{host}{os.pathsep}{env['PATH']}"
    result = subprocess.run(["sh", str(script), *args], cwd=cwd, capture_output=True, text=True, timeout=60,
                            env=env, preexec_fn=lambda: os.umask(umask))
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
    script.write_text(text[:text.index("# --- 4. unit, service")])  # curl | sh after a dropped connection
    result = subprocess.run(["sh", str(script), "--root", str(root), "--no-systemd", "--python", sys.executable,
                             "--token", TOKEN], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                            env=os.environ | {"RECORD": str(tmp_path)})
    assert result.returncode != 0
    assert not (root / "etc").exists() and not (tmp_path / "argv").exists()  # not enrolled, nothing written


def test_served_script_passes_sh_n_and_shellcheck(script):
    subprocess.run(["sh", "-n", str(script)], check=True)
    lint = subprocess.run(["shellcheck", "--shell=sh", "--severity=style", str(script)], capture_output=True,
                          text=True)
    assert lint.returncode == 0, lint.stdout


def test_unit_passes_systemd_analyze_verify_and_security_with_the_agreed_settings(script, tmp_path):
    root = tmp_path / "root"
    env_in_place(root)
    install(script, "--root", str(root), "--token", TOKEN, cwd=tmp_path)
    text = (root / "etc/systemd/system/edgefleet-agent.service").read_text()
    for line in ("Type=notify", "NotifyAccess=all", "ExecStart=/opt/edgefleet/confirmed/bin/edgefleet agent "
                 "supervise --config /etc/edgefleet/agent.toml", "User=edgefleet", "StateDirectory=edgefleet",
                 "ProtectSystem=strict", "ReadWritePaths=/opt/edgefleet", "Restart=on-failure", "NoNewPrivileges=yes",
                 "WatchdogSec=30"):
        assert line in text.splitlines(), line
    unit = tmp_path / "edgefleet-agent.service"  # verify wants ExecStart to exist: the unit against this root
    unit.write_text(text.replace("/opt/edgefleet/", f"{root}/opt/edgefleet/"))
    verify = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True)
    assert verify.returncode == 0 and verify.stderr.strip() == "", verify.stderr
    security = subprocess.run(["systemd-analyze", "security", "--offline=true", "--threshold=25", str(unit)],
                              capture_output=True, text=True)
    assert security.returncode == 0, security.stdout[-2000:]


def test_first_install_without_a_token_is_refused_before_anything_is_written(script, tmp_path):
    result = subprocess.run(["sh", str(script), "--root", str(tmp_path / "root"), "--no-systemd", "--offline",
                             "--python", sys.executable], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "not enrolled yet: pass --token" in result.stderr
    assert not (tmp_path / "root").exists()


def test_script_without_root_privileges_or_with_an_unknown_option_says_why(script):
    result = subprocess.run(["sh", str(script), "--no-systemd", "--frobnicate"], capture_output=True, text=True)
    assert result.returncode == 1 and result.stderr == "error: unknown option '--frobnicate' (see --help)\n"
    if shutil.which("setpriv") and os.getuid() == 0:
        as_nobody = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sh", "-s", "--",
                                    "--token", "x.y"], input=script.read_text(), capture_output=True, text=True,
                                   cwd="/")  # as `curl ... | sh -s --` without sudo
        assert as_nobody.returncode == 1 and "run this as root" in as_nobody.stderr


@pytest.mark.parametrize("confirmed, kept", [("9.0.0", True), ("0.0.9", False)])
def test_rerun_keeps_an_agent_that_updated_itself_to_a_newer_version_and_never_downgrades(script, tmp_path,
                                                                                          confirmed, kept):
    """The supervisor moved confirmed (and current) to a version it confirmed: a rerun keeps it when it is newer
    than the served one, and installs the served one over an older one."""
    root, opt = tmp_path / "root", tmp_path / "root/opt/edgefleet"
    env_in_place(root)
    install(script, "--root", str(root), "--token", TOKEN, cwd=tmp_path)
    shutil.copytree(opt / "envs" / __version__, opt / "envs" / confirmed)
    for link in ("current", "confirmed"):
        (opt / f"{link}.new").symlink_to(f"envs/{confirmed}")
        (opt / f"{link}.new").replace(opt / link)
    again = install(script, "--root", str(root), cwd=tmp_path)
    expected = confirmed if kept else __version__
    assert (opt / "current").readlink() == (opt / "confirmed").readlink() == Path("envs", expected)
    assert f"run {opt}/confirmed/bin/edgefleet agent supervise --config" in again.stdout  # as the unit does
    assert (f"keeping agent {confirmed}, which updated itself (newer than {__version__} served here)"
            in again.stdout) == kept, again.stdout


def test_root_runs_nothing_the_agent_user_can_change(script, tmp_path, systemd_host):
    """The agent owns /opt/edgefleet (it updates itself there): every program there, and the venv and pip that
    build it, runs as edgefleet, on the first install and on a repair over a version it updated itself to;
    root's chown touches the directories it makes, never a walk through what the agent wrote below them."""
    root, opt = tmp_path / "root", tmp_path / "root/opt/edgefleet"
    first = install(script, "--root", str(root), "--token", TOKEN, cwd=tmp_path, host=systemd_host)
    assert "device:  pi-1" in first.stdout and "service: edgefleet-agent.service active" in first.stdout
    shutil.copytree(opt / "envs" / __version__, opt / "envs/9.0.0")
    for link in ("current", "confirmed"):
        (opt / f"{link}.new").symlink_to("envs/9.0.0")
        (opt / f"{link}.new").replace(opt / link)
    again = install(script, "--root", str(root), cwd=tmp_path, host=systemd_host)
    assert "keeping agent 9.0.0, which updated itself" in again.stdout, again.stdout
    runs = (tmp_path / "record/runs").read_text().splitlines()
    assert {run.split(" ", 1)[1] for run in runs} == {"python -m", "pip install", "python -c", "edgefleet --help",
                                                      "edgefleet agent"}, runs  # every kind of step ran
    assert [run for run in runs if not run.startswith("edgefleet ")] == []
    chowns = (tmp_path / "record/chown").read_text().splitlines()
    assert chowns and not [c for c in chowns if "-R" in c.split()], chowns


def test_unit_runs_nothing_as_root(script, tmp_path):
    """The agent can write its ExecStart's directory: every command the unit runs drops to User=, none is marked
    to keep root's privileges ('+', '!', '!!') and nothing runs before User= applies (PermissionsStartOnly=)."""
    root = tmp_path / "root"
    env_in_place(root)
    install(script, "--root", str(root), "--token", TOKEN, cwd=tmp_path)
    lines = (root / "etc/systemd/system/edgefleet-agent.service").read_text().splitlines()
    assert "User=edgefleet" in lines and not [line for line in lines if line.startswith("PermissionsStartOnly=")]
    commands = [line.split("=", 1)[1] for line in lines if line.startswith("Exec")]
    prefixes = [c[:len(c) - len(c.lstrip("-@:+!|"))] for c in commands]  # systemd.service(5): "Command lines"
    assert commands and not [p for p in prefixes if set(p) & {"+", "!"}], commands
