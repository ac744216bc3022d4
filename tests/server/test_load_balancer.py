"""Two server replicas behind a real HAProxy (health check ``GET /api/ready``): one is ``kill -9``-ed and every
call through the load balancer still succeeds, requests the dead one was sent included (HAProxy retries a refused
connection on the other replica; GETs also after an empty answer). Real Mosquitto, real server processes on one
store, the real CLI."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support.fleet import ADMIN_TOKEN, run_cli, start_server
from tests.support.haproxy import haproxy_binary, start_haproxy
from tests.support.net import wait_for

from .builders import tiny_onnx


@pytest.fixture
def replicas(tmp_path, mosquitto):
    started = []
    try:
        for name in ("a", "b"):
            started.append(start_server(tmp_path, mosquitto.url, "--shared-subscriptions", "--server-id", name,
                                        data_dir=tmp_path / "data", name=name))
        yield started
    finally:
        for replica in started:
            replica.stop()


@pytest.fixture
def proxy(tmp_path, replicas):
    if haproxy_binary() is None:
        pytest.fail("haproxy is not installed: run `make system-deps`")
    running = start_haproxy(tmp_path / "haproxy", {r.name: f"127.0.0.1:{r.port}" for r in replicas})
    yield running
    running.stop()


def test_calls_through_the_load_balancer_keep_working_when_a_replica_is_killed(tmp_path, replicas, proxy):
    wait_for(lambda: set(proxy.server_states().values()) == {"UP"}, what="both replicas in rotation")
    model = tmp_path / "scaler.onnx"
    model.write_bytes(tiny_onnx())
    run_cli("model", "register", str(model), "--name", "scaler", server=proxy.url)

    replicas[0].kill()  # no goodbye: its sockets are simply gone
    with httpx.Client(base_url=proxy.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30) as raw:
        # no client-side retries here: whatever reaches the dead replica before its health check fails is
        # HAProxy's to redispatch (round robin sends every other request there)
        answers = [raw.get("/api/models").status_code for _ in range(6)]
        created = raw.post("/api/devices", json={"id": "cam-after-kill"}).status_code
    assert (answers, created) == ([200] * 6, 201)
    listed = json.loads(run_cli("model", "list", "--json", server=proxy.url).stdout)
    assert [m["name"] for m in listed] == ["scaler"]
    wait_for(lambda: proxy.server_states()["a"].startswith("DOWN"), what="HAProxy to take the dead replica out")
    devices = json.loads(run_cli("device", "list", "--json", server=proxy.url).stdout)
    assert "cam-after-kill" in [d["id"] for d in devices]


def test_the_shipped_haproxy_example_is_a_valid_configuration(tmp_path):
    if haproxy_binary() is None:
        pytest.fail("haproxy is not installed: run `make system-deps`")
    example = (Path(__file__).parents[2] / "docs" / "haproxy.cfg.example").read_text()
    config = tmp_path / "haproxy.cfg"  # its stats socket's folder exists only where HAProxy is installed as a service
    config.write_text(example.replace("/run/haproxy/admin.sock", str(tmp_path / "admin.sock")))
    checked = subprocess.run([haproxy_binary(), "-c", "-f", str(config)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "uri /api/ready" in example and "option redispatch" in example
