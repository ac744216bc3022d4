"""Server replicas sharing one TLS broker: each connects with its own identity (``edgefleet-server.<replica>``).

The generated Mosquitto config makes a certificate's name the client id, so two connections with one
identity push each other off; ``broker-config --replica`` writes one identity per replica, which the ACL
gives the server's rights, shared subscriptions included. Real Mosquitto with exactly the generated files.
"""

from __future__ import annotations

import pytest

from fleet_protocol import topics
from fleet_server.broker_config import BrokerConfigFiles
from fleet_server.ca import CertificateRequestError, replica_identity
from edge_agent.identity import new_device_key_and_csr
from tests.security.tls_mqtt import Identity, TlsBroker, start_tls_broker
from tests.server import messages
from tests.support.net import wait_for


@pytest.fixture
def replica_broker(tmp_path) -> TlsBroker:
    broker = start_tls_broker(tmp_path, replicas=("a", "b"))
    yield broker
    broker.process.stop()


def _replica(broker: TlsBroker, name: str) -> Identity:
    cert = broker.files.replica_files(name)[0]
    return Identity(replica_identity(name), cert, broker.files.replica_files(name)[1])


def test_replicas_with_their_own_identities_share_device_messages(replica_broker):
    status_filter = topics.server_subscriptions(shared=True)[1]
    replicas = [replica_broker.probe(_replica(replica_broker, name)) for name in ("a", "b")]
    device_identity = replica_broker.device()
    device = replica_broker.probe(device_identity)
    try:
        for probe in replicas:
            assert probe.connect() == "connected"
            probe.subscribe(status_filter)
        assert device.connect() == "connected"
        topic = topics.device_topic(device_identity.name, "status")
        for _ in range(6):
            device.publish(topic, messages.status(device_identity.name))
        wait_for(lambda: sum(len(p.messages) for p in replicas) >= 6, what="the replicas to get the statuses")
        assert sorted(len(p.messages) > 0 for p in replicas) == [True, True]  # each got a share ...
        assert sum(len(p.messages) for p in replicas) == 6 and [p.disconnects for p in replicas] == [0, 0]
    finally:
        for probe in (*replicas, device):
            probe.close()


def test_two_connections_with_one_identity_push_each_other_off(replica_broker):
    first, second = (replica_broker.probe(replica_broker.server_identity) for _ in range(2))
    try:
        assert first.connect() == "connected"
        assert second.connect() == "connected"
        wait_for(lambda: first.disconnects > 0, what="the broker to drop the first connection")
    finally:
        first.close()
        second.close()


def test_a_replica_without_its_own_identity_is_told_how_to_write_one(replica_broker):
    files = BrokerConfigFiles.in_directory(replica_broker.files.directory)
    assert files.server_tls("a")[1].name == "server-client.a.crt"
    with pytest.raises(ValueError, match=r"broker-config --replica c"):
        files.server_tls("c")


def test_a_device_cannot_take_a_replica_identity(replica_broker):
    _, csr = new_device_key_and_csr(replica_identity("c"))
    with pytest.raises(CertificateRequestError):
        replica_broker.ca.sign_csr(csr, device_id=replica_identity("c"))
