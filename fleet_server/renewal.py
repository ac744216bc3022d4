"""Certificate renewal over MQTT: a CSR on ``devices/<id>/renew``, the new certificate on ``devices/<id>/certificate``.

The request is authenticated by the broker, not by anything in the message:
with the generated Mosquitto config (mutual TLS, ``use_identity_as_username``,
ACL ``pattern write .../devices/%u/renew``) only the holder of a valid,
unrevoked certificate for ``<id>`` can publish there. So the server renews
only when its broker enforces that (``broker_tls_dir`` set); on the embedded
or any plain broker a renew message is refused. It also refuses a device that
is revoked or holds no unexpired certificate (one offline past expiry cannot
reach the broker anyway, and must re-enroll with a new token). The CSR must
name the device (the CA checks CN = topic id). The old certificate stays
valid until it expires; it is not revoked, so a device that misses the answer
asks again at its next connect.

Among server replicas, the replica the broker hands the request to answers
it (the ``renew`` topic is a shared subscription: one replica gets each
message), leader or not: a follower cannot pass the request on, and the
answer needs no leader because it is idempotent in effect. A request
delivered twice (a replica died before its PUBACK) signs a second
certificate for the same public key: both are valid, the device installs
whichever comes last, and the content keys are wrapped per public key
(:meth:`.content_keys.ContentKeys.recipients` lists a key once), so the
device's desired state does not change again.
"""

from __future__ import annotations

import logging

from fleet_protocol import renewal, topics
from fleet_protocol.errors import BadDataError
from fleet_protocol.root import load_certificate
from fleet_protocol.timestamps import from_iso, to_iso

from .clock import utc_now
from .content_keys import certificate_public_key
from .store import devices as device_store
from .store import enrollments as enrollment_store

log = logging.getLogger(__name__)


class RenewalRefused(BadDataError):
    code = "renewal_refused"


def handle_renew(fleet, device_id: str, payload: bytes) -> None:
    """Sign the CSR and publish the certificate to the device, or raise a :class:`BadDataError`."""
    csr_pem = renewal.parse_renew_request(payload)
    if fleet.config.broker_tls_dir is None:
        raise RenewalRefused("certificate renewal needs the broker's mutual TLS (server run with --broker-tls-dir)")
    device = device_store.get_device(db=fleet.db, device_id=device_id)
    now = utc_now()
    current = [c for c in enrollment_store.certificates(db=fleet.db, device_id=device_id)
               if c["revoked"] is None and from_iso(c["not_after"]) > now]
    if device is None or device["revoked"] or not current:
        raise RenewalRefused(f"device {device_id} is revoked or has no valid certificate: it must re-enroll")
    cert_pem = fleet.ca.sign_csr(csr_pem, device_id=device_id, valid_days=fleet.config.device_cert_valid_days,
                                 now=now)
    cert = load_certificate(cert_pem)
    enrollment_store.add_certificate(db=fleet.db, serial=cert.serial_number, device_id=device_id,
                                     not_after=to_iso(cert.not_valid_after_utc), issued=to_iso(now),
                                     public_key=certificate_public_key(cert))
    fleet.publish(topics.device_topic(device_id, "certificate"), renewal.encode_certificate(cert_pem), qos=1)
    fleet.desired.recompute([device_id])  # its content keys wrapped for the new key too
    log.info("device %s: certificate renewed until %s", device_id, to_iso(cert.not_valid_after_utc))
