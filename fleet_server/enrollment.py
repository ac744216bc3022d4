"""Device enrollment: one-time tokens in, client certificates out; no HTTP.

An operator creates an enrollment for a device id (``edgefleet device enroll``):
a one-time token ``<device id>.<random>``, stored as a hash, valid
``enrollment_ttl_s``; the device id in it tells the agent what to put in its
CSR (the random part is what authenticates). The
device generates its key pair itself and sends only a CSR with the token
(``POST /api/enroll``). :meth:`Enrollments.enroll` checks the token (known, unused, not
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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from fleet_protocol.canonical import parse_json_object
from fleet_protocol.errors import BadDataError, EdgefleetError
from fleet_protocol.fields import NAME, refuse_unknown_keys
from fleet_protocol.root import load_certificate
from fleet_protocol.timestamps import from_iso, to_iso

from . import audit
from .ca import CertificateAuthority, is_reserved_name
from .clock import utc_now
from .config import ServerConfig
from .content_keys import certificate_public_key
from .desired import DesiredStates
from .keys import KeyRing
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


class Enrollments:
    """Enrollment tokens in the store, signed by the device CA; built by the fleet.

    ``public_broker_url`` is asked at each enrollment (the embedded broker's port is known only once it runs);
    the keys and root handed out are the :class:`~fleet_server.keys.KeyRing`'s current ones; ``config`` gives
    ``enrollment_ttl_s`` and ``device_cert_valid_days``, read at use.
    """

    def __init__(self, *, db: Database, ca: CertificateAuthority, keys: KeyRing, desired: DesiredStates,
                 public_broker_url: Callable[[], str], config: ServerConfig):
        self._db = db
        self._ca = ca
        self._keys = keys
        self._desired = desired
        self._public_broker_url = public_broker_url
        self._config = config

    def create(self, *, device_id: str, tags: dict[str, str], ttl_s: int | None = None) -> dict:
        """Register the device (if new) and mint its one-time token (valid ``ttl_s``, default the server's);
        ``{"device_id", "token", "expires"}``."""
        ttl_s = self._config.enrollment_ttl_s if ttl_s is None else ttl_s
        if not NAME.fullmatch(device_id) or is_reserved_name(device_id):
            raise BadDataError(f"device id {device_id!r} must be lowercase letters, digits, '.', '_' or '-' "
                               "(up to 64, starting with a letter or digit)")
        if ttl_s < 1:
            raise BadDataError("an enrollment token must be valid for at least one second")
        now = utc_now()
        db = self._db
        with db.transaction():
            if not device_store.create_device(db=db, device_id=device_id, name=None, tags=tags,
                                              created=to_iso(now)) and tags:
                device_store.update_device(db=db, device_id=device_id, tags=tags)
            token = f"{device_id}.{secrets.token_urlsafe(32)}"  # the device learns its id from the token
            expires = to_iso(now + timedelta(seconds=ttl_s))
            enrollment_store.add_enrollment(db=db, token=token, device_id=device_id, tags=tags,
                                            created=to_iso(now), expires=expires)
        return {"device_id": device_id, "token": token, "expires": expires}

    def enroll(self, raw: bytes) -> Enrollment:
        """``POST /api/enroll``: parse the body, sign the device's CSR if its token is good (using the token up),
        give a device re-enrolled after a revocation its modules back, and audit it as ``enrollment:<id>``."""
        result = self._sign(parse_enrollment_request(raw))
        self._desired.recompute([result.device_id])
        audit.record(self._db, actor=f"enrollment:{result.device_id}", action="POST /api/enroll",
                     target=f"/api/devices/{result.device_id}", status=200, object={"device_id": result.device_id})
        return result

    def _sign(self, request: EnrollmentRequest) -> Enrollment:
        db = self._db
        record = enrollment_store.get_enrollment(db=db, token=request.token)
        now = utc_now()
        if record is None:
            raise EnrollmentRefused("unknown enrollment token; ask an operator for one (`edgefleet device enroll`)")
        if record["used"] is not None:
            raise EnrollmentRefused(f"this enrollment token was already used (at {record['used']}); "
                                    "ask an operator for a new one")
        if from_iso(record["expires"]) <= now:
            raise EnrollmentRefused(f"this enrollment token expired at {record['expires']}; ask an operator for a "
                                    "new one")
        device_id = record["device_id"]
        cert_pem = self._ca.sign_csr(request.csr_pem, device_id=device_id, valid_days=self._config.device_cert_valid_days, now=now)
        if not enrollment_store.claim_enrollment(db=db, token=request.token, now=to_iso(now)):
            raise EnrollmentRefused("this enrollment token was used by another request just now")
        cert = load_certificate(cert_pem)
        enrollment_store.add_certificate(db=db, serial=cert.serial_number, device_id=device_id,
                                         not_after=to_iso(cert.not_valid_after_utc), issued=to_iso(now),
                                         public_key=certificate_public_key(cert))
        device_store.set_revoked(db=db, device_id=device_id, revoked=None)  # a new token: a revoked device returns
        _add_device_tags(db, device_id, request.tags)
        return Enrollment(device_id=device_id, certificate_pem=cert_pem.decode("ascii"),
                          ca_certificate_pem=self._ca.certificate_pem().decode("ascii"),
                          broker_url=self._public_broker_url(),
                          trusted_keys=[self._keys.signing_key.public_key.to_hex()], root=self._keys.root)


def _add_device_tags(db: Database, device_id: str, tags: dict[str, str]) -> None:
    """The device's own tags, under the operator's, and only before it is first seen (as in its status message)."""
    device = device_store.get_device(db=db, device_id=device_id)
    if tags and device is not None and device["last_seen"] is None:
        merged = {**tags, **device["tags"]}
        if merged != device["tags"]:
            device_store.update_device(db=db, device_id=device_id, tags=merged)
