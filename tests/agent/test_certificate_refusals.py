"""Answers on the device's ``certificate`` topic that the renewer refuses are counted in the agent's refusal
telemetry and logged once per reason and interval, however many arrive; the genuine answer still installs.

A real fleet CA (and a foreign one) issue the certificates; the link is a stand-in that records what the
renewer publishes, since only the renewer's own decisions are under test here (the MQTT path is covered by
tests/security/test_agent_identity.py)."""

from __future__ import annotations

import logging

from edge_agent.identity import CertificateRenewer, new_device_key_and_csr
from edge_agent.mqtt_link import RefusalCount
from fleet_protocol import renewal
from fleet_server.ca import CertificateAuthority

DEVICE = "cam-1"
FLOOD = 300


class RecordingLink:
    connected = True

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []
        self.reloaded = 0

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> int:
        self.published.append((topic, payload))
        return len(self.published)

    def reload_client_certificate(self, cert, key) -> None:
        self.reloaded += 1


def test_refused_certificate_answers_are_counted_and_logged_once_per_reason(tmp_path, caplog):
    ca, foreign = CertificateAuthority.load_or_create(tmp_path / "ca"), CertificateAuthority.load_or_create(
        tmp_path / "foreign", name="someone else's CA")
    key_pem, csr_pem = new_device_key_and_csr(DEVICE)
    files = (tmp_path / "ca.pem", tmp_path / "device.pem", tmp_path / "device.key")
    files[0].write_bytes(ca.certificate_pem())
    files[1].write_bytes(ca.sign_csr(csr_pem, device_id=DEVICE, valid_days=30))
    files[2].write_bytes(key_pem)
    link, refusals = RecordingLink(), RefusalCount()
    renewer = CertificateRenewer(device_id=DEVICE, files=files, link=link, renew_before_s=60 * 86400,
                                 refusals=refusals)
    assert renewer.check()  # due: the CSR for a fresh key is out, its answer awaited
    asked = renewal.parse_renew_request(link.published[0][1])

    _, stranger_csr = new_device_key_and_csr(DEVICE)
    floods = {
        "malformed_message": b'{"type": "certificate", "certificate": "-----BEGIN CERTIFICATE-----junk"}',
        "not_from_fleet_ca": renewal.encode_certificate(foreign.sign_csr(asked, device_id=DEVICE)),
        "not_requested": renewal.encode_certificate(ca.sign_csr(stranger_csr, device_id=DEVICE)),
    }
    with caplog.at_level(logging.WARNING, logger="edgefleet.agent.identity"):
        for payload in floods.values():
            for _ in range(FLOOD):
                renewer.on_certificate(renewer.topic, payload)
    warnings = [r for r in caplog.records if r.name == "edgefleet.agent.identity" and r.levelno >= logging.WARNING]
    assert len(warnings) == len(floods), [r.getMessage() for r in warnings]
    assert refusals.by_code == {f"certificate/{code}": FLOOD for code in floods}
    assert refusals.take_records() == [("event", {
        "event": "refused_messages", "count": 3 * FLOOD, "total": 3 * FLOOD,
        "codes": {f"certificate/{code}": FLOOD for code in floods}})]
    assert renewer.renewed == 0 and files[2].read_bytes() == key_pem

    renewer.on_certificate(renewer.topic, renewal.encode_certificate(ca.sign_csr(asked, device_id=DEVICE)))
    assert renewer.renewed == 1 and link.reloaded == 1 and files[2].read_bytes() != key_pem
    assert refusals.total == 3 * FLOOD
