"""Fixtures for the security tests: a Mosquitto broker run with exactly the generated TLS config."""

from __future__ import annotations

import pytest

from tests.security.tls_mqtt import Identity, Probe, TlsBroker, start_tls_broker


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
