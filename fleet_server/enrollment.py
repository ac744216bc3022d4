"""Device enrollment: one-time tokens in, client certificates out; no HTTP.

An operator creates an enrollment for a device id (``edgefleet device enroll``):
a one-time token ``<device id>.<random>``, stored as a hash, valid
``enrollment_ttl_s``; the device id in it tells the agent what to put in its
CSR (the random part is what authenticates). The
device generates its key pair itself and sends only a CSR with the token
(``POST /api/enroll``). :func:`enroll` checks the token (known, unused, not
expired), has the CA sign the CSR (CN must be the enrolled device id), claims
the token atomically (one caller wins), records the certificate's serial and
hands back what the device needs to run: its certificate, the CA certificate,
the broker URL, the key(s) bundles and desired state are signed with and the
current signed root document (the root of trust the device moves forward
from, see :mod:`fleet_protocol.root`). Tags the device sends
(``edgefleet agent enroll --tags``) are added under the operator's, by the
same rule as the tags in its status messages: only until it is first seen.

:func:`parse_enrollment_request` is the one parser of the request body: a
JSON object ``{"token": str, "csr": PEM str, "tags"?: {str: str}}``, at most
:data:`MAX_REQUEST_BYTES`; anything else is :class:`BadDataError` (never a
different exception). Refused tokens are :class:`EnrollmentRefused`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import timedelta

from fleet_protocol.canonical import parse_json_object
from fleet_protocol.errors import BadDataError, EdgefleetError
from fleet_protocol.fields import NAME, refuse_unknown_keys
from fleet_protocol.root import load_certificate
from fleet_protocol.timestamps import from_iso, to_iso

from .ca import CertificateAuthority, is_reserved_name
from .clock import utc_now
from .content_keys import certificate_public_key
from .store import Database
from .store import devices as device_store
from .store import enrollments as enrollment_store

MAX_REQUEST_BYTES = 16 * 1024
MAX_TOKEN_CHARS = 256
MAX_TAGS = 32


class EnrollmentRefused(EdgefleetError):
    """The enrollment token is unknown, used or expired: get a new one from an operator."""

    code = "enrollment_refused"


@dataclass(frozen=True)
class EnrollmentRequest:
    token: str
    csr_pem: bytes
    tags: dict[str, str] = field(default_factory=dict)  # the device's own; the operator's tags win


@dataclass(frozen=True)
class Enrollment:
    """What a device receives: everything but its private key, which never left it."""

    device_id: str
    certificate_pem: str
    ca_certificate_pem: str
    broker_url: str
    trusted_keys: list[str]
    root: dict  # the current signed root envelope


def parse_enrollment_request(raw: bytes) -> EnrollmentRequest:
    """The request body as an :class:`EnrollmentRequest`, or :class:`BadDataError` saying what is wrong."""
    body = parse_json_object(raw, what="the enrollment request", max_bytes=MAX_REQUEST_BYTES, error=BadDataError)
    refuse_unknown_keys(body, ("token", "csr", "tags"), where="the enrollment request", error=BadDataError)
    token, csr = body.get("token"), body.get("csr")
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
        raise BadDataError(f"'token' must be a non-empty string of at most {MAX_TOKEN_CHARS} characters")
    if not isinstance(csr, str) or "-----BEGIN CERTIFICATE REQUEST-----" not in csr:
        raise BadDataError("'csr' must be a PEM certificate signing request")
    try:
        csr_pem = csr.encode("ascii")
    except UnicodeEncodeError:
        raise BadDataError("'csr' must be a PEM certificate signing request (ASCII)") from None
    tags = body.get("tags", {})
    if not isinstance(tags, dict) or len(tags) > MAX_TAGS or not all(
            isinstance(k, str) and isinstance(v, str) and 0 < len(k) <= 64 and len(v) <= 256 for k, v in tags.items()):
        raise BadDataError(f"'tags' must map at most {MAX_TAGS} names (1-64 characters) to strings of at most "
                           "256 characters")
    return EnrollmentRequest(token=token, csr_pem=csr_pem, tags=tags)


def create_enrollment(db: Database, *, device_id: str, tags: dict[str, str], ttl_s: int) -> tuple[str, str]:
    """Register the device (if new) and mint its one-time token; ``(token, expires)``."""
    if not NAME.fullmatch(device_id) or is_reserved_name(device_id):
        raise BadDataError(f"device id {device_id!r} must be lowercase letters, digits, '.', '_' or '-' "
                           "(up to 64, starting with a letter or digit)")
    if ttl_s < 1:
        raise BadDataError("an enrollment token must be valid for at least one second")
    now = utc_now()
    with db.transaction():
        if not device_store.create_device(db=db, device_id=device_id, name=None, tags=tags, created=to_iso(now)) \
                and tags:
            device_store.update_device(db=db, device_id=device_id, tags=tags)
        token = f"{device_id}.{secrets.token_urlsafe(32)}"  # the device learns its id from the token
        expires = to_iso(now + timedelta(seconds=ttl_s))
        enrollment_store.add_enrollment(db=db, token=token, device_id=device_id, tags=tags, created=to_iso(now),
                                        expires=expires)
    return token, expires


def enroll(db: Database, ca: CertificateAuthority, request: EnrollmentRequest, *, broker_url: str,
           trusted_keys: list[str], root: dict, valid_days: int) -> Enrollment:
    """Sign the device's CSR if its token is good, and use the token up."""
    record = enrollment_store.get_enrollment(db=db, token=request.token)
    now = utc_now()
    if record is None:
        raise EnrollmentRefused("unknown enrollment token; ask an operator for one (`edgefleet device enroll`)")
    if record["used"] is not None:
        raise EnrollmentRefused(f"this enrollment token was already used (at {record['used']}); "
                                "ask an operator for a new one")
    if from_iso(record["expires"]) <= now:
        raise EnrollmentRefused(f"this enrollment token expired at {record['expires']}; ask an operator for a new one")
    device_id = record["device_id"]
    cert_pem = ca.sign_csr(request.csr_pem, device_id=device_id, valid_days=valid_days, now=now)
    if not enrollment_store.claim_enrollment(db=db, token=request.token, now=to_iso(now)):
        raise EnrollmentRefused("this enrollment token was used by another request just now")
    cert = load_certificate(cert_pem)
    enrollment_store.add_certificate(db=db, serial=cert.serial_number, device_id=device_id,
                                     not_after=to_iso(cert.not_valid_after_utc), issued=to_iso(now),
                                     public_key=certificate_public_key(cert))
    device_store.set_revoked(db=db, device_id=device_id, revoked=None)  # a new token is how a revoked device returns
    _add_device_tags(db, device_id, request.tags)
    return Enrollment(device_id=device_id, certificate_pem=cert_pem.decode("ascii"),
                      ca_certificate_pem=ca.certificate_pem().decode("ascii"), broker_url=broker_url,
                      trusted_keys=trusted_keys, root=root)


def _add_device_tags(db: Database, device_id: str, tags: dict[str, str]) -> None:
    """The device's own tags, under the operator's, and only before it is first seen (as in its status message)."""
    device = device_store.get_device(db=db, device_id=device_id)
    if tags and device is not None and device["last_seen"] is None:
        merged = {**tags, **device["tags"]}
        if merged != device["tags"]:
            device_store.update_device(db=db, device_id=device_id, tags=merged)
