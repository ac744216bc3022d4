"""``run_server``: first start prints the token once, keys are private, Ctrl-C stops cleanly."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys

import httpx
from sqlalchemy import func, select

from fleet_server.store import Database
from fleet_server.store.schema import api_tokens
from tests.support.net import free_port, wait_for

SCRIPT = ("import sys; from pathlib import Path; from fleet_server.config import ServerConfig; "
          "from fleet_server.runner import run_server; "
          "run_server(ServerConfig(data_dir=Path(sys.argv[1]), port=int(sys.argv[2]), "
          "embedded_broker_port=int(sys.argv[3])))")


def start(data_dir, env_token: str | None = None) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "EDGEFLEET_ADMIN_TOKEN"}
    if env_token:
        env["EDGEFLEET_ADMIN_TOKEN"] = env_token
    process = subprocess.Popen([sys.executable, "-c", SCRIPT, str(data_dir), str(port), str(free_port())],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    wait_for(lambda: _health(port), timeout=30, what="the server to answer")
    return process, port


def stop(process: subprocess.Popen, sig: int = signal.SIGINT) -> str:
    process.send_signal(sig)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    return output


def _health(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/api/health").json()["broker"] == "connected"
    except httpx.TransportError:
        return False


def test_sigterm_stops_the_server_cleanly_like_ctrl_c(tmp_path):
    process, _ = start(tmp_path / "data")  # answering and connected
    output = stop(process, signal.SIGTERM)
    assert "edgefleet server stopped" in output  # the fleet was closed (a replica's lease handed back)


def test_first_start_prints_the_token_once_and_keeps_only_its_hash(tmp_path):
    data_dir = tmp_path / "data"
    process, port = start(data_dir)
    try:
        output = ""
        while "Admin API token" not in output:
            output += process.stdout.readline()
        token_line = process.stdout.readline()
        output += token_line
        token = token_line.strip()
        keys = httpx.get(f"http://127.0.0.1:{port}/api/keys", headers={"Authorization": f"Bearer {token}"})
        assert keys.status_code == 200
    finally:
        output += stop(process)
    assert "edgefleet server stopped" in output
    assert output.count(token) == 1
    key_file = data_dir / "keys" / "signing.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    assert token not in (data_dir / "fleet.db").read_bytes().decode("latin-1")
    db = Database.for_data_dir(data_dir)
    assert db.scalar(select(func.count()).select_from(api_tokens)) == 1
    db.close()
    process, _ = start(data_dir)
    assert token not in stop(process)


def test_the_admin_token_can_come_from_the_environment_at_first_start(tmp_path):
    process, port = start(tmp_path / "data", env_token="ci-token-123")
    try:
        ok = httpx.get(f"http://127.0.0.1:{port}/api/models", headers={"Authorization": "Bearer ci-token-123"})
        assert ok.status_code == 200
    finally:
        stop(process)


def test_a_database_url_that_does_not_parse_is_a_one_line_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "edgefleet_cli.main", "server", "run", "--data-dir",
                             str(tmp_path / "data"), "--database-url", "postgresql://user@/db?host=/x&port=notaport"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("error: the server stopped:"), result.stderr
