"""Mosquitto run with exactly the generated config: who may connect, read and write what.

Mosquitto grants SUBACKs and PUBACKs for topics the ACL denies and then
drops the message silently, so "denied" is shown by order, not by waiting: a
forbidden message is sent first and an allowed control message after it, on
the same connection to the same receiver, which gets messages in order. When
the control message arrives with nothing before it, the forbidden one was
dropped.
"""

from __future__ import annotations

import os
import pwd
import stat
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from fleet_server.clock import utc_now
from fleet_protocol.topics import DEVICE_KINDS, PREFIX, ROOT_TOPIC, bundle_chunks_topic, device_topic
from fleet_server.broker_config import write_broker_config
from fleet_server.ca import CertificateAuthority, private_key_pem
from tests.security.tls_mqtt import Identity, TlsBroker

EVERYTHING = f"{PREFIX}/#"
CHUNKS = bundle_chunks_topic("ab" * 32)
DEVICE_WRITES = ("reported", "status", "telemetry", "fetch")


def connect_once(broker: TlsBroker, identity: Identity | None) -> str:
    """Connect, note the outcome ("connected" or why not), and close."""
    probe = broker.probe(identity)
    try:
        return probe.connect()
    finally:
        probe.close()


def this_tests(received: list[tuple[str, bytes]], *devices: Identity) -> list[tuple[str, bytes]]:
    """Leave out messages retained on the shared broker by earlier tests (their devices have other names)."""
    return [(t, p) for t, p in received
            if not t.startswith(f"{PREFIX}/devices/") or any(t.split("/")[3] == d.name for d in devices)]


def serial_of(identity: Identity) -> int:
    return x509.load_pem_x509_certificate(identity.cert.read_bytes()).serial_number


# --- the generated files ---------------------------------------------------------------------------


def test_generated_keys_are_private_and_the_broker_runs_as_their_owner(tls_broker):
    files = tls_broker.files
    assert stat.S_IMODE(files.directory.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in (files.server_key, files.client_key)} == {0o600}
    assert f"user {pwd.getpwuid(os.geteuid()).pw_name}\n" in files.config.read_text()


@pytest.mark.skipif(os.geteuid() != 0, reason="handing files to another user needs root")
def test_files_go_to_the_broker_user_except_the_fleet_servers_identity(tmp_path):
    files = write_broker_config(tmp_path / "broker", CertificateAuthority.load_or_create(tmp_path / "ca"),
                                port=1883, run_as="nobody")
    nobody = pwd.getpwnam("nobody").pw_uid
    assert {files.server_key.stat().st_uid, files.crl.stat().st_uid, files.directory.stat().st_uid} == {nobody}
    assert files.client_key.stat().st_uid == os.geteuid()
    assert "user nobody\n" in files.config.read_text()


# --- who may connect --------------------------------------------------------------------------------


def test_client_without_certificate_is_refused(tls_broker):
    assert connect_once(tls_broker, None) != "connected"


def test_client_with_certificate_from_another_ca_is_refused(tls_broker, tmp_path):
    other_ca = CertificateAuthority.load_or_create(tmp_path / "other-ca")
    assert connect_once(tls_broker, tls_broker.device(ca=other_ca)) != "connected"


def test_client_with_expired_certificate_is_refused(tls_broker):
    expired = tls_broker.device(valid_days=1, now=utc_now() - timedelta(days=365))
    assert connect_once(tls_broker, expired) != "connected"


def test_client_with_revoked_certificate_is_refused_after_crl_reload(tls_broker):
    revoked, bystander = tls_broker.device(), tls_broker.device()
    assert connect_once(tls_broker, revoked) == "connected"
    tls_broker.ca.revoke(serial_of(revoked), reason="key_compromise")
    tls_broker.publish_crl_and_reload()
    assert connect_once(tls_broker, revoked) != "connected"
    assert connect_once(tls_broker, bystander) == "connected"


def test_revocation_cuts_an_open_connection_only_when_the_broker_restarts(own_tls_broker, connect):
    device = own_tls_broker.device()
    server = connect(own_tls_broker, own_tls_broker.server_identity)
    server.subscribe(EVERYTHING)
    link = connect(own_tls_broker, device)
    own_tls_broker.ca.revoke(serial_of(device), reason="key_compromise")
    own_tls_broker.publish_crl_and_reload()
    link.publish(device_topic(device.name, "telemetry"), b"still here")  # SIGHUP leaves open connections up
    assert server.wait_for_message(device_topic(device.name, "telemetry"))[-1][1] == b"still here"
    link.close()
    own_tls_broker.process.restart()
    assert connect_once(own_tls_broker, device) != "connected"


def test_expired_crl_locks_out_every_client(own_tls_broker):
    device = own_tls_broker.device()
    stale = own_tls_broker.ca.crl_pem(now=utc_now() - timedelta(days=365))  # long past its nextUpdate
    own_tls_broker.publish_crl_and_reload(stale)
    assert connect_once(own_tls_broker, device) != "connected"
    assert connect_once(own_tls_broker, own_tls_broker.server_identity) != "connected"
    own_tls_broker.publish_crl_and_reload()  # the CA re-issues a stale CRL when asked for the current one
    assert connect_once(own_tls_broker, device) == "connected"


@pytest.mark.parametrize("make_key", [lambda: rsa.generate_private_key(65537, 2048),
                                      lambda: ec.generate_private_key(ec.SECP384R1()),
                                      ed25519.Ed25519PrivateKey.generate], ids=["rsa-2048", "p-384", "ed25519"])
def test_device_with_any_key_type_the_ca_accepts_can_connect(tls_broker, make_key, tmp_path):
    key = make_key()
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dev-keytype")])).sign(key, algorithm))
    identity = Identity("dev-keytype", tmp_path / "device.crt", tmp_path / "device.key")
    identity.cert.write_bytes(tls_broker.ca.sign_csr(csr.public_bytes(serialization.Encoding.PEM),
                                                     device_id="dev-keytype"))
    identity.key.write_bytes(private_key_pem(key))
    assert connect_once(tls_broker, identity) == "connected"


def test_device_cannot_take_over_another_devices_client_id(tls_broker, connect):
    victim, intruder = tls_broker.device(), tls_broker.device()
    server = connect(tls_broker, tls_broker.server_identity)
    server.subscribe(EVERYTHING)
    victim_link = connect(tls_broker, victim, client_id=victim.name)
    connect(tls_broker, intruder, client_id=victim.name)  # the broker uses the certificate CN instead
    victim_link.publish(device_topic(victim.name, "status"), b"online")
    server.wait_for_message(device_topic(victim.name, "status"))
    assert victim_link.disconnects == 0


# --- what a device may write ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", DEVICE_KINDS)
def test_device_cannot_write_another_devices_topics(tls_broker, connect, kind):
    device_a, device_b = tls_broker.device(), tls_broker.device()
    server = connect(tls_broker, tls_broker.server_identity)
    server.subscribe(EVERYTHING)
    link_a = connect(tls_broker, device_a)
    link_a.publish(device_topic(device_b.name, kind), b"forged")
    control = device_topic(device_a.name, "reported")
    link_a.publish(control, b"control")
    assert this_tests(server.wait_for_message(control), device_a, device_b) == [(control, b"control")]


@pytest.mark.parametrize("topic", ["desired", CHUNKS, ROOT_TOPIC, f"{PREFIX}/elsewhere"])
def test_device_cannot_write_its_desired_state_bundle_chunks_the_root_or_other_fleet_topics(tls_broker, connect, topic):
    device = tls_broker.device()
    topic = device_topic(device.name, topic) if topic == "desired" else topic
    server = connect(tls_broker, tls_broker.server_identity)
    server.subscribe(EVERYTHING)
    link = connect(tls_broker, device)
    link.publish(topic, b"forged")
    control = device_topic(device.name, "reported")
    link.publish(control, b"control")
    assert this_tests(server.wait_for_message(control), device) == [(control, b"control")]


def test_device_can_write_its_own_reported_status_telemetry_and_fetch_topics(tls_broker, connect):
    device = tls_broker.device()
    server = connect(tls_broker, tls_broker.server_identity)
    server.subscribe(EVERYTHING)
    link = connect(tls_broker, device)
    topics = [device_topic(device.name, kind) for kind in DEVICE_WRITES]
    for topic in topics:
        link.publish(topic, topic.encode())
    assert this_tests(server.wait_for_message(topics[-1]), device) == [(t, t.encode()) for t in topics]


# --- what a device may read -------------------------------------------------------------------------


def test_device_cannot_read_another_devices_desired_state(tls_broker, connect):
    device_a, device_b = tls_broker.device(), tls_broker.device()
    server = connect(tls_broker, tls_broker.server_identity)
    link_a = connect(tls_broker, device_a)
    link_a.subscribe(device_topic(device_b.name, "desired"), device_topic(device_a.name, "desired"))
    server.publish(device_topic(device_b.name, "desired"), b"for b")
    control = device_topic(device_a.name, "desired")
    server.publish(control, b"for a")
    assert link_a.wait_for_message(control) == [(control, b"for a")]


def test_device_wildcard_subscription_sees_only_its_desired_state_and_bundle_chunks(tls_broker, connect):
    device_a, device_b = tls_broker.device(), tls_broker.device()
    server = connect(tls_broker, tls_broker.server_identity)
    server.publish(device_topic(device_b.name, "desired"), b"retained for b", retain=True)
    link_b = connect(tls_broker, device_b)
    link_a = connect(tls_broker, device_a)
    link_a.subscribe("#")
    link_b.publish(device_topic(device_b.name, "reported"), b"b reports")
    server.publish(device_topic(device_b.name, "telemetry"), b"b telemetry")
    server.publish(CHUNKS, b"chunk")
    control = device_topic(device_a.name, "desired")
    server.publish(control, b"for a")
    assert link_a.wait_for_message(control) == [(CHUNKS, b"chunk"), (control, b"for a")]


def test_device_can_read_its_desired_state_the_root_of_trust_and_bundle_chunks(tls_broker, connect):
    device = tls_broker.device()
    server = connect(tls_broker, tls_broker.server_identity)
    server.publish(device_topic(device.name, "desired"), b"retained desired", retain=True)
    server.publish(ROOT_TOPIC, b"retained root chain", retain=True)
    link = connect(tls_broker, device)
    link.subscribe(device_topic(device.name, "desired"), ROOT_TOPIC, CHUNKS)
    assert link.wait_for_message(device_topic(device.name, "desired"))[-1][1] == b"retained desired"
    assert link.wait_for_message(ROOT_TOPIC)[-1] == (ROOT_TOPIC, b"retained root chain")
    server.publish(ROOT_TOPIC, b"", retain=True)  # the broker is shared: leave no retained root behind
    server.publish(CHUNKS, b"chunk")
    assert link.wait_for_message(CHUNKS)[-1] == (CHUNKS, b"chunk")


# --- the fleet server's identity --------------------------------------------------------------------


def test_server_identity_reads_and_writes_every_fleet_topic(tls_broker, connect):
    device = tls_broker.device()
    server = connect(tls_broker, tls_broker.server_identity)
    server.subscribe(EVERYTHING)
    topics = [device_topic(device.name, kind) for kind in DEVICE_KINDS] + [CHUNKS, f"{PREFIX}/elsewhere"]
    for topic in topics:
        server.publish(topic, topic.encode())
    assert this_tests(server.wait_for_message(topics[-1]), device) == [(t, t.encode()) for t in topics]
