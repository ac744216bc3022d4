"""The real agent enrolled through the CLI and running over mutual TLS against the real server and Mosquitto."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys


from cryptography.hazmat.primitives.serialization import load_pem_private_key

from edge_agent.config import load_config
from fleet_protocol import renewal, topics
from edge_agent.identity import new_device_key_and_csr
from fleet_protocol.root import load_certificate
from fleet_server.broker_config import BrokerConfigFiles
from fleet_server.ca import CertificateAuthority
from fleet_server.store import enrollments as enrollment_store
from simulators.devices import spawn_agent
from tests.security.tls_mqtt import TlsBroker
from tests.support.fleet import ADMIN_TOKEN
from tests.support.mosquitto import Mosquitto
from tests.support.net import free_port, wait_for


def agent_enroll(tls_fleet, token: str, state_dir, config) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgefleet_cli.main", "agent", "enroll", "--server",
                           tls_fleet.server.url, "--token", token, "--state-dir", str(state_dir), "--config",
                           str(config)], capture_output=True, text=True, timeout=120)


def cli(tls_fleet, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "EDGEFLEET_SERVER": tls_fleet.server.url, "EDGEFLEET_TOKEN": ADMIN_TOKEN}
    result = subprocess.run([sys.executable, "-m", "edgefleet_cli.main", *args], capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    return result


def test_agent_enrolls_and_runs_over_mutual_tls(tls_fleet, tmp_path):
    created = json.loads(cli(tls_fleet, "device", "enroll", "--name", "cam-1", "--tags", "site=berlin", "--json").stdout)
    state_dir, config = tmp_path / "device" / "state", tmp_path / "device" / "agent.toml"
    result = agent_enroll(tls_fleet, created["token"], state_dir, config)
    assert result.returncode == 0, result.stderr
    loaded = load_config(config)
    assert loaded.broker_url.startswith("mqtts://") and loaded.tls_files is not None
    assert stat.S_IMODE(loaded.tls_key.stat().st_mode) == 0o600
    with config.open("a") as handle:
        handle.write(f"scoring_port = {free_port()}\nheartbeat_interval_s = 1\n")
    agent = spawn_agent(config, tmp_path / "agent.log")
    try:
        with tls_fleet.api() as api:
            wait_for(lambda: api.get("/api/devices/cam-1").json()["status"] == "online",
                     what="the enrolled agent to come online over mutual TLS")
            assert api.get("/api/devices/cam-1").json()["tags"] == {"site": "berlin"}
    finally:
        agent.terminate()
        agent.wait(timeout=15)


def test_device_revoke_from_the_cli_refuses_the_agent_at_its_next_connect(tls_fleet, tmp_path):
    agent, config = start_enrolled_agent(tls_fleet, tmp_path, "cam-1")
    with tls_fleet.api() as api:
        try:
            wait_for(lambda: api.get("/api/devices/cam-1").json()["status"] == "online", what="the agent online")
            reloads = tls_fleet.broker.reloads()
            assert "serials" in cli(tls_fleet, "device", "revoke", "cam-1").stdout
            wait_for(lambda: tls_fleet.broker.reloads() > reloads, what="Mosquitto to reload its CRL")
        finally:
            agent.terminate()
            agent.wait(timeout=15)
        wait_for(lambda: api.get("/api/devices/cam-1").json()["status"] == "offline", what="the agent to go offline")
        refusals = refused_handshakes(tls_fleet)
        agent = spawn_agent(config_path(tmp_path, "cam-1"), tmp_path / "cam-1" / "agent-after-revoke.log")
        try:
            wait_for(lambda: refused_handshakes(tls_fleet) > refusals, what="the broker to refuse the revoked agent")
            assert api.get("/api/devices/cam-1").json()["status"] == "offline"
        finally:
            agent.terminate()
            agent.wait(timeout=15)


def refused_handshakes(tls_fleet) -> int:
    return tls_fleet.broker.process.log.read_text(errors="replace").count("certificate verify failed")


def test_broker_config_command_writes_a_config_mosquitto_runs_with(tmp_path):
    port = free_port()
    out, data = tmp_path / "broker", tmp_path / "data"
    result = subprocess.run([sys.executable, "-m", "edgefleet_cli.main", "server", "broker-config", "--out", str(out),
                             "--port", str(port), "--data-dir", str(data)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"--broker mqtts://127.0.0.1:{port} --broker-tls-dir {out}" in result.stdout
    mosquitto = Mosquitto("127.0.0.1", port, None, out / "mosquitto.conf", tmp_path / "mosquitto.log")
    mosquitto.start()
    try:
        files = BrokerConfigFiles.in_directory(out)
        broker = TlsBroker(CertificateAuthority.load_or_create(data / "ca"), files, mosquitto, tmp_path)
        probe = broker.probe(broker.server_identity)
        try:
            assert probe.connect() == "connected"
        finally:
            probe.close()
    finally:
        mosquitto.stop()


def test_private_key_never_leaves_the_device(tls_fleet, tmp_path):
    state_dir = tmp_path / "state"
    assert agent_enroll(tls_fleet, tls_fleet.enrollment_token("cam-1"), state_dir, tmp_path / "a.toml").returncode == 0
    key = (state_dir / "identity" / "device.key").read_bytes()
    secret = b"".join(key.splitlines()[1:-1])
    assert secret not in (tls_fleet.server.config.data_dir / "fleet.db").read_bytes()
    assert not any(secret in p.read_bytes() for p in tls_fleet.server.config.data_dir.rglob("*") if p.is_file())


def test_agent_enroll_with_a_used_token_fails_with_a_clear_error(tls_fleet, tmp_path):
    token = tls_fleet.enrollment_token("cam-1")
    assert agent_enroll(tls_fleet, token, tmp_path / "a", tmp_path / "a.toml").returncode == 0
    again = agent_enroll(tls_fleet, token, tmp_path / "b", tmp_path / "b.toml")
    assert again.returncode != 0
    assert "already used" in again.stderr
    assert not (tmp_path / "b.toml").exists()


def start_enrolled_agent(tls_fleet, tmp_path, device_id: str) -> tuple[subprocess.Popen, object]:
    config = tmp_path / device_id / "agent.toml"
    result = agent_enroll(tls_fleet, tls_fleet.enrollment_token(device_id), tmp_path / device_id / "state", config)
    assert result.returncode == 0, result.stderr
    with config.open("a") as handle:
        handle.write(f"scoring_port = {free_port()}\nheartbeat_interval_s = 1\n")
    return spawn_agent(config, tmp_path / device_id / "agent.log"), load_config(config)


def test_agent_renews_its_certificate_before_expiry_over_mqtt(tls_fleet, tmp_path):
    fleet = tls_fleet.server.fleet
    fleet.config.device_cert_valid_days = 10  # inside the agent's 30-day renewal window from the start
    agent, config = None, None
    try:
        agent, config = start_enrolled_agent(tls_fleet, tmp_path, "cam-1")
        first = load_certificate(config.tls_cert.read_bytes())
        fleet.config.device_cert_valid_days = 90
        wait_for(lambda: len(enrollment_store.certificates(db=fleet.db, device_id="cam-1")) == 2
                 and load_certificate(config.tls_cert.read_bytes()).serial_number != first.serial_number,
                 what="the agent to renew its certificate")
        renewed = load_certificate(config.tls_cert.read_bytes())
        key = load_pem_private_key(config.tls_key.read_bytes(), password=None)
        assert renewed.public_key() == key.public_key() != first.public_key()
        assert renewed.not_valid_after_utc > first.not_valid_after_utc
        assert stat.S_IMODE(config.tls_key.stat().st_mode) == 0o600
    finally:
        if agent is not None:
            agent.terminate()
            agent.wait(timeout=15)
    # the renewed identity is what the agent connects with from now on: the old certificate can go
    fleet.ca.revoke(first.serial_number, reason="superseded")
    reloads = tls_fleet.broker.reloads()
    assert fleet.revocation.publish_crl()
    wait_for(lambda: tls_fleet.broker.reloads() > reloads, what="Mosquitto to reload its CRL")
    with tls_fleet.api() as api:
        wait_for(lambda: api.get("/api/devices/cam-1").json()["status"] == "offline", what="the agent to go offline")
        agent = spawn_agent(config_path(tmp_path, "cam-1"), tmp_path / "cam-1" / "agent2.log")
        try:
            wait_for(lambda: api.get("/api/devices/cam-1").json()["status"] == "online",
                     what="the agent to reconnect with its renewed certificate")
        finally:
            agent.terminate()
            agent.wait(timeout=15)


def config_path(tmp_path, device_id: str):
    return tmp_path / device_id / "agent.toml"


def test_renewal_is_refused_for_a_revoked_device(tls_fleet, connect, tmp_path):
    from tests.security.test_enrollment import enroll, identity

    device = identity(tmp_path, "cam-1", enroll(tls_fleet, tls_fleet.enrollment_token("cam-1"), "cam-1"))
    link = connect(tls_fleet.broker, device)
    fleet = tls_fleet.server.fleet
    with tls_fleet.api() as api:
        api.post("/api/devices/cam-1/revoke")
    before = fleet.handlers.malformed.total
    link.publish(topics.device_topic("cam-1", "renew"), renewal.encode_renew_request(new_device_key_and_csr("cam-1")[1]))
    wait_for(lambda: fleet.handlers.malformed.total > before, what="the server to refuse the renewal")
    assert len(enrollment_store.certificates(db=fleet.db, device_id="cam-1")) == 1
