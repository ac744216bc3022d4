"""Fixtures for the security tests: a Mosquitto broker run with exactly the generated TLS config, and the
real fleet server connected to it over mutual TLS; and ``trust_fleet``, the same server on a plain Mosquitto
with one agent enrolled through ``edge_agent.enroll`` (:class:`tests.security.trust_fleet.TrustFleet`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from fleet_server.config import ServerConfig
from fleet_server.runner import ServerThread
from tests.security.tls_mqtt import Identity, Probe, TlsBroker, start_tls_broker
from tests.security.trust_fleet import TrustFleet
from tests.support.fleet import ADMIN_TOKEN
from tests.support.mosquitto import start_mosquitto


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory) -> TlsBroker:
    """One TLS broker per test module; tests keep apart by using fresh device identities."""
    broker = start_tls_broker(tmp_path_factory.mktemp("tls-broker"))
    yield broker
    broker.process.stop()


@pytest.fixture
def own_tls_broker(tmp_path) -> TlsBroker:
    """A TLS broker for one test, which may restart it or break its CRL."""
    broker = start_tls_broker(tmp_path / "tls-broker")
    yield broker
    broker.process.stop()


@pytest.fixture
def connect():
    """``connect(broker, identity)``: a connected probe, closed after the test."""
    opened: list[Probe] = []

    def _connect(broker: TlsBroker, identity: Identity | None, **kwargs) -> Probe:
        probe = broker.probe(identity, **kwargs)
        opened.append(probe)
        outcome = probe.connect()
        assert outcome == "connected", f"{identity.name if identity else 'no certificate'}: {outcome}"
        return probe

    yield _connect
    for probe in opened:
        probe.close()


@dataclass
class TlsFleet:
    """The real fleet server connected over mutual TLS to a Mosquitto configured from the server's own CA."""

    server: ServerThread
    broker: TlsBroker
    pid_file: Path

    def api(self, token: str = ADMIN_TOKEN) -> httpx.Client:
        return httpx.Client(base_url=self.server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)

    def enrollment_token(self, device_id: str, **body) -> str:
        with self.api() as api:
            response = api.post("/api/enrollments", json={"device_id": device_id, **body})
        assert response.status_code == 201, response.text
        return response.json()["token"]


@pytest.fixture
def tls_fleet(tmp_path, monkeypatch) -> TlsFleet:
    """Server data dir = the broker's workdir, so the broker trusts the CA the server enrolls devices with."""
    monkeypatch.setenv("EDGEFLEET_ADMIN_TOKEN", ADMIN_TOKEN)
    workdir = tmp_path / "fleet"
    broker = start_tls_broker(workdir)
    pid_file = workdir / "mosquitto.pid"
    pid_file.write_text(str(broker.process.process.pid))
    url = f"mqtts://127.0.0.1:{broker.port}"
    config = ServerConfig(data_dir=workdir, port=0, broker_url=url, public_broker_url=url,
                          broker_tls_dir=broker.files.directory, broker_pid_file=pid_file)
    server = ServerThread(config).start()
    yield TlsFleet(server, broker, pid_file)
    server.stop()
    broker.process.stop()


@pytest.fixture
def trust_fleet(tmp_path, monkeypatch) -> TrustFleet:
    monkeypatch.setenv("EDGEFLEET_ADMIN_TOKEN", ADMIN_TOKEN)
    broker = start_mosquitto(tmp_path / "mosquitto")
    fleet = TrustFleet(tmp_path, broker)
    yield fleet
    fleet.close()
    broker.stop()
