"""The device's TLS identity: renewing its client certificate over MQTT before it expires.

:class:`CertificateRenewer` checks the certificate at every connect and once
an hour. Within ``renew_before_s`` of expiry it makes a fresh key pair here
(the private key never leaves the device), publishes the CSR on the device's
``renew`` topic and waits for the answer on its ``certificate`` topic (see
:mod:`fleet_protocol.renewal`; the broker's mutual TLS and ACL authenticate
both). An answer is taken only if it is for the key it asked with, names
this device and is issued by the fleet CA; then the new key and certificate
replace the old ones on disk and the link presents them from its next
connect. Every other answer is refused: counted in the agent's
:class:`~edge_agent.mqtt_link.RefusalCount` (kind ``certificate``, in the telemetry) and logged at
most once per reason and interval, so a flood neither fills the log nor goes unreported. Crash
safety: the new key is saved as ``device.key.new`` first, the certificate replaced next, the key last;
:func:`finish_interrupted_switch` (called by the agent before it opens the link) completes or drops a
half-done switch. A device offline past expiry
cannot connect to ask, and must re-enroll with a new token.

``cryptography`` is imported by the functions that use it, so an agent
without TLS files never loads it for this module (B5, the idle footprint).
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import timedelta
from pathlib import Path

from fleet_protocol import renewal, topics
from fleet_protocol.errors import MessageError
from fleet_protocol.root import load_certificate, make_csr, needs_renewal

from .clock import utc_now
from .installer import write_atomic
from .mqtt_link import RateLimitedLog, RefusalCount

log = logging.getLogger("edgefleet.agent.identity")
CHECK_INTERVAL_S = 3600.0


def finish_interrupted_switch(cert: Path, key: Path) -> None:
    """After a crash mid-renewal: keep ``key.new`` if the certificate on disk is already for it, else drop it."""
    pending = key.with_name(key.name + ".new")
    if not pending.exists():
        return
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    new_public = load_pem_private_key(pending.read_bytes(), password=None).public_key()
    if load_certificate(cert.read_bytes()).public_key() == new_public:
        os.replace(pending, key)
    else:
        pending.unlink()


class CertificateRenewer:
    def __init__(self, *, device_id: str, files: tuple[Path, Path, Path], link, renew_before_s: float,
                 refusals: RefusalCount | None = None):
        self._device_id = device_id
        self._ca_cert, self._cert, self._key = files
        self._link = link
        self._renew_before = timedelta(seconds=renew_before_s)
        self._pending_key: bytes | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.renewed = 0
        self.refusals = refusals if refusals is not None else RefusalCount()
        self._refusal_log = RateLimitedLog(log)  # refused answers can arrive in floods
        self.topic = topics.device_topic(device_id, "certificate")

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="edgefleet-cert-renewal", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def on_connect(self) -> None:
        """Ask again at every connect if still due (an answer may have been lost with the old connection)."""
        with self._lock:
            self._pending_key = None
        self.check()

    def check(self) -> bool:
        """Send a renewal request if the certificate is due and none is outstanding; True when sent."""
        if not needs_renewal(self._cert.read_bytes(), utc_now(), self._renew_before):
            return False
        with self._lock:
            if self._pending_key is not None or not self._link.connected:
                return False
            key_pem, csr_pem = new_device_key_and_csr(self._device_id)
            self._pending_key = key_pem
        sent = self._link.publish(topics.device_topic(self._device_id, "renew"), renewal.encode_renew_request(csr_pem),
                                  qos=1)
        log.info("certificate expires %s: renewal requested (%s)",
                 load_certificate(self._cert.read_bytes()).not_valid_after_utc, "sent" if sent else "not sent")
        return sent is not None

    def on_certificate(self, topic: str, payload: bytes) -> None:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        try:
            cert_pem = renewal.parse_certificate(payload)
            cert = load_certificate(cert_pem)
        except (MessageError, ValueError, TypeError) as exc:
            self._refuse("malformed_message", "ignored a certificate message that is not a certificate: %s", exc)
            return
        try:
            cert.verify_directly_issued_by(load_certificate(self._ca_cert.read_bytes()))
        except (InvalidSignature, ValueError, TypeError) as exc:
            self._refuse("not_from_fleet_ca", "ignored a certificate not issued by the fleet CA: %s", exc)
            return
        with self._lock:
            key_pem = self._pending_key
            if key_pem is None or cert.public_key() != load_pem_private_key(key_pem, password=None).public_key():
                self._refuse("not_requested", "ignored a certificate for a key this device did not ask with")
                return
            names = [a.value for a in cert.subject]
            if names != [self._device_id]:
                self._refuse("wrong_device", "ignored a certificate for %r", names)
                return
            write_atomic(self._key.with_name(self._key.name + ".new"), key_pem, mode=0o600)
            write_atomic(self._cert, cert_pem, mode=0o644)
            os.replace(self._key.with_name(self._key.name + ".new"), self._key)
            self._pending_key = None
            self.renewed += 1
        self._link.reload_client_certificate(self._cert, self._key)
        log.info("certificate renewed; valid until %s (used from the next connect)", cert.not_valid_after_utc)

    def _refuse(self, code: str, message: str, *args) -> None:
        self.refusals.add("certificate", code)
        self._refusal_log.warning(code, message, *args)

    def _run(self) -> None:
        while not self._stop.wait(CHECK_INTERVAL_S):
            try:
                self.check()
            except Exception:  # noqa: BLE001 - the renewal thread must outlive one bad check
                log.exception("checking the client certificate")


def new_device_key_and_csr(device_id: str) -> tuple[bytes, bytes]:
    """A fresh EC P-256 key (PKCS#8 PEM) and its CSR with CN = ``device_id``, to enroll and to renew.

    The key is made here, on the device, and never leaves it; the CSR is :func:`fleet_protocol.root.make_csr`.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return key_pem, make_csr(device_id, key_pem)
