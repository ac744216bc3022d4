"""The one-command install (GET /install.sh) run end to end in a throwaway root against a real server.

The server (real process threads, real HTTP) talks mutual TLS to a real
Mosquitto and mirrors this tree's wheel plus its dependencies' wheels; the
script runs with ``--root DIR --no-systemd --offline``: a real venv, a real
pip install of edgefleet[agent] from the mirror, a real enrollment. The
agent it installed is then started from that venv (not from this checkout)
with a real ``$NOTIFY_SOCKET``, connects, and serves a module deployed to it.
What the CI version skips: the user, ``systemctl`` and the service start,
which need systemd as PID 1 (the unit file is checked with ``systemd-analyze
verify`` and ``security --offline`` in :mod:`tests.server.test_install_script_steps`).

One test function drives the whole story on purpose: under ``pytest -n 2``
each xdist worker that runs a test of this module builds its own install
(about 40 s), and ``xdist_group`` does not hold with pytest 9. The script's
own rules (refusals, the unit, lint) are checked in seconds by
:mod:`tests.server.test_install_script_steps`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from fleet_server.config import ServerConfig
from fleet_server.runner import ServerThread
from tests.security.tls_mqtt import start_tls_broker
from tests.server.builders import module_files, tar_gz, tiny_onnx
from tests.support.fleet import ADMIN_TOKEN
from tests.support.net import free_port, wait_for
from tests.support.wheels import build_mirror

UNIT = "etc/systemd/system/edgefleet-agent.service"


@dataclass
class Installed:
    server: ServerThread
    script: Path
    root: Path
    device_id: str
    scoring_port: int
    first_output: str
    mirror: Path

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.server.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                            timeout=30)

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return run_script(self.script, "--root", str(self.root), "--no-systemd", *args)


def device_env() -> dict[str, str]:
    """This environment without PYTHONPATH, which may point at this checkout: the installed code must run."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def run_script(script: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(script), *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    workdir = tmp_path_factory.mktemp("install")
    mirror = build_mirror(workdir / "wheels")
    broker = start_tls_broker(workdir / "fleet")
    url = f"mqtts://127.0.0.1:{broker.port}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EDGEFLEET_ADMIN_TOKEN", ADMIN_TOKEN)
        server = ServerThread(ServerConfig(data_dir=workdir / "fleet", port=0, broker_url=url, public_broker_url=url,
                                           broker_tls_dir=broker.files.directory, wheels_dir=mirror)).start()
    try:
        script = workdir / "install.sh"
        script.write_bytes(httpx.get(f"{server.url}/install.sh", timeout=30).content)
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as api:
            token = api.post("/api/enrollments", json={"device_id": "pi-1"}).json()["token"]
        root, port = workdir / "root", free_port()
        result = run_script(script, "--root", str(root), "--no-systemd", "--offline", "--python", sys.executable,
                            "--token", token, "--profile", "raspberry-pi-5", "--tags", "site=berlin",
                            "--scoring-port", str(port))
        assert result.returncode == 0, result.stdout + result.stderr
        yield Installed(server, script, root, "pi-1", port, result.stdout, mirror)
    finally:
        server.stop()
        broker.process.stop()


def test_one_command_install_runs_a_deployed_module_repairs_on_rerun_and_uninstalls(installed, tmp_path):
    """In order: the layout and device id; the installed agent serving a deployment; a rerun that repairs without
    pip or a second enrollment; --uninstall keeping the identity."""
    check_layout_and_device_id(installed)
    check_installed_agent_notifies_systemd_connects_and_runs_a_deployed_module(installed, tmp_path)
    check_running_again_repairs_and_keeps_one_device_one_unit_and_the_config(installed)
    check_uninstall_removes_service_and_environments_and_says_what_stays(installed)


def check_wheel_ships_the_install_script(installed):
    (wheel,) = installed.mirror.glob("edgefleet-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        assert "fleet_server/device_install/install.sh" in archive.namelist()


def check_layout_and_device_id(installed):
    check_wheel_ships_the_install_script(installed)  # what lets a pip-installed server serve it
    root = installed.root
    assert "device:  pi-1" in installed.first_output
    assert f"Looking in links: {installed.server.url}/wheels/\n" in installed.first_output  # --offline: nothing else
    assert (root / "opt/edgefleet/current").readlink() == Path("envs/0.1.0")
    assert (root / "opt/edgefleet/confirmed").readlink() == Path("envs/0.1.0")  # where the supervisor starts from
    assert (root / "opt/edgefleet/envs/0.1.0/.complete").is_file()
    assert (root / "var/lib/edgefleet/identity/device.key").stat().st_mode & 0o077 == 0
    config = (root / "etc/edgefleet/agent.toml").read_text()
    assert 'profile = "raspberry-pi-5"' in config and '"site" = "berlin"' in config
    assert f'install_prefix = "{root}/opt/edgefleet"' in config  # the agent updates itself
    imported = subprocess.run([str(root / "opt/edgefleet/current/bin/python"), "-c",
                               "import edge_agent; print(edge_agent.__file__)"], capture_output=True, text=True,
                              env=device_env(), cwd="/")
    assert imported.stdout.startswith(f"{root}/opt/edgefleet/current/lib/"), imported  # not this checkout


def check_installed_agent_notifies_systemd_connects_and_runs_a_deployed_module(installed, tmp_path):
    root = installed.root
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(90)
    env = device_env() | {"NOTIFY_SOCKET": str(tmp_path / "notify")}
    log = (tmp_path / "agent.log").open("wb")
    agent = subprocess.Popen([str(root / "opt/edgefleet/current/bin/edgefleet"), "agent", "run", "--config",
                              str(root / "etc/edgefleet/agent.toml")], stdout=log, stderr=subprocess.STDOUT, env=env,
                             cwd="/")
    try:
        assert notify.recv(64) == b"READY=1"
        assert notify.recv(64) == b"WATCHDOG=1"
        with installed.api() as api:
            wait_for(lambda: api.get("/api/devices/pi-1").json()["status"] == "online", timeout=60,
                     what="the installed agent to connect")
            bundle = api.post("/api/bundles/from-module", files={"file": ("m.tar.gz", tar_gz(
                module_files("scaler", model=tiny_onnx(3.0))))}).json()
            assert api.post("/api/deployments", json={"module": "scaler", "version": bundle["version"],
                                                      "devices": ["pi-1"]}).status_code == 201
        url = f"http://127.0.0.1:{installed.scoring_port}/v2/models/scaler/infer"
        x = np.arange(8, dtype=np.float32).reshape(2, 4)
        body = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": x.ravel().tolist()}]}
        answer = wait_for(lambda: _ok(httpx.post(url, json=body, timeout=10)), timeout=90,
                          what="the deployed module to serve on the installed agent")
        assert np.allclose(np.asarray(answer["outputs"][0]["data"]).reshape(2, 4), x * 3.0)
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=30)
        notify.close()
    assert agent.returncode == 0, (tmp_path / "agent.log").read_text()[-3000:]


def _ok(response: httpx.Response) -> dict | None:
    return response.json() if response.status_code == 200 else None


def check_running_again_repairs_and_keeps_one_device_one_unit_and_the_config(installed):
    root = installed.root
    config = (root / "etc/edgefleet/agent.toml").read_bytes()
    key = (root / "var/lib/edgefleet/identity/device.key").read_bytes()
    (root / UNIT).unlink()  # damage to repair
    (root / "opt/edgefleet/current").unlink()
    again = installed.run("--offline", "--token", "pi-1.already-used-token")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already enrolled as pi-1" in again.stdout and "device:  pi-1" in again.stdout
    assert "environment" in again.stdout and "is in place" in again.stdout  # no second pip install
    assert (root / "etc/edgefleet/agent.toml").read_bytes() == config
    assert (root / "var/lib/edgefleet/identity/device.key").read_bytes() == key
    assert [p.name for p in (root / "etc/systemd/system").iterdir()] == ["edgefleet-agent.service"]
    assert [p.name for p in (root / "opt/edgefleet/envs").iterdir()] == ["0.1.0"]
    assert (root / "opt/edgefleet/current").readlink() == Path("envs/0.1.0")
    with installed.api() as api:
        assert [d["id"] for d in api.get("/api/devices").json()] == ["pi-1"]
    unit_written = (root / UNIT).stat().st_mtime_ns
    third = installed.run("--offline")  # nothing to repair: nothing rewritten
    assert third.returncode == 0 and f"{root}/{UNIT} is unchanged" in third.stdout, third.stdout + third.stderr
    assert (root / UNIT).stat().st_mtime_ns == unit_written


def check_uninstall_removes_service_and_environments_and_says_what_stays(installed):
    root = installed.root
    result = installed.run("--uninstall")
    assert result.returncode == 0, result.stderr
    assert not (root / UNIT).exists() and not (root / "opt/edgefleet").exists()
    assert (root / "etc/edgefleet/agent.toml").is_file() and (root / "var/lib/edgefleet/identity/device.key").is_file()
    assert f"kept:    {root}/etc/edgefleet/agent.toml and {root}/var/lib/edgefleet: device pi-1's key" in result.stdout
    assert "edgefleet device revoke pi-1" in result.stdout
