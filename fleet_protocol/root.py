"""Root of trust with threshold key rotation, and the device's certificate helpers.

Root documents work like TUF's root metadata. A root is a signed envelope
(:mod:`fleet_protocol.signing`) over::

    {"type": "root", "version": 3, "expires": "2030-01-01T00:00:00Z",
     "root_keys": [hex, ...], "root_threshold": 2, "signing_keys": [hex, ...]}

Root keys sign root documents only; signing keys sign bundles and desired
state (feed :meth:`TrustedRoot.signing_keys` to
:class:`fleet_protocol.trust.TrustedState`). A device trusts one root from
enrollment on and moves to version N+1 only if a threshold of the current root
keys *and* a threshold of the new root keys signed it, so neither a stolen old
key set nor a forged new one can take over alone. Versions never go down or
skip. Walking a chain of roots (a device that was offline through several
rotations) tolerates expired intermediate roots; only the final one must be
unexpired, as in python-tuf's ``TrustedMetadataSet``.

The bottom of the module holds the small X.509 helpers a device needs to get
and keep a client certificate: a CSR for a key the device made (key
generation is the agent's), the expiry, and whether it is time to renew. The
certificate authority itself lives on the server (``fleet_server.ca``).
Nothing here does I/O, reads a clock or draws random numbers (beyond what
signing a CSR needs inside ``cryptography``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Iterable

from .errors import BadDataError, ExpiredError, MessageError, RollbackError
from .fields import count_field, field, is_valid_name
from .signing import PublicKey, SigningKey, sign_envelope, verify_envelope

if TYPE_CHECKING:
    from cryptography.x509 import Certificate
from .timestamps import from_iso, to_iso

ROOT_TYPE = "root"
RENEW_BEFORE = timedelta(days=30)


@dataclass(frozen=True)
class RootDocument:
    """The signed part of a root envelope, validated."""

    version: int
    expires: str
    root_keys: tuple[str, ...]
    root_threshold: int
    signing_keys: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"type": ROOT_TYPE, "version": self.version, "expires": self.expires,
                "root_keys": list(self.root_keys), "root_threshold": self.root_threshold,
                "signing_keys": list(self.signing_keys)}

    @classmethod
    def from_dict(cls, doc: object) -> "RootDocument":
        where = "root"
        if not isinstance(doc, dict):
            raise MessageError(f"{where}: must be an object")
        if doc.get("type") != ROOT_TYPE:
            raise MessageError(f"{where}: type must be {ROOT_TYPE!r}, got {doc.get('type')!r}")
        version = count_field(doc, "version", where=where, minimum=1)
        expires = field(doc, "expires", str, where=where)
        from_iso(expires, what="root expiry")
        root_keys = _key_list(doc, "root_keys")
        threshold = count_field(doc, "root_threshold", where=where, minimum=1)
        if threshold > len(root_keys):
            raise MessageError(f"{where}: root_threshold {threshold} exceeds the {len(root_keys)} root key(s)")
        return cls(version, expires, root_keys, threshold, _key_list(doc, "signing_keys"))

    def root_key_map(self) -> dict[str, PublicKey]:
        return _key_map(self.root_keys)

    def signing_public_keys(self) -> list[PublicKey]:
        return list(_key_map(self.signing_keys).values())


def _key_list(doc: dict, key: str) -> tuple[str, ...]:
    values = field(doc, key, list, where="root")
    if not values:
        raise MessageError(f"root: {key} must not be empty")
    if not all(isinstance(value, str) for value in values):
        raise MessageError(f"root: {key} must hold hex strings")
    if len(_key_map(values)) != len(values):  # SignatureError first if one is not an Ed25519 key
        raise MessageError(f"root: {key} lists a key twice")
    return tuple(values)


def _key_map(hex_keys: Iterable[str]) -> dict[str, PublicKey]:
    keys = [PublicKey.from_hex(value) for value in hex_keys]
    return {key.keyid: key for key in keys}


def make_root(*, version: int, expires: datetime, root_keys: list[PublicKey], root_threshold: int,
              signing_keys: list[PublicKey]) -> dict:
    """The signed part of a root document, validated as a device would."""
    doc = {"type": ROOT_TYPE, "version": version, "expires": to_iso(expires),
           "root_keys": [key.to_hex() for key in root_keys], "root_threshold": root_threshold,
           "signing_keys": [key.to_hex() for key in signing_keys]}
    return RootDocument.from_dict(doc).to_dict()


def sign_root(root: dict, keys: list[SigningKey]) -> dict:
    """An envelope over ``root`` carrying one signature per key (old and new root keys on a rotation)."""
    if not keys:
        raise ValueError("a root needs at least one signature")
    signatures = [sign_envelope(root, key)["signatures"][0] for key in keys]
    return {"signed": root, "signatures": signatures}


class TrustedRoot:
    """The root a device trusts now; every check that can refuse a new root lives here."""

    def __init__(self, root: RootDocument):
        self.root = root

    @classmethod
    def from_envelope(cls, envelope: dict) -> "TrustedRoot":
        """Trust an initial root (from enrollment or local storage): it must be signed by its own threshold."""
        if not isinstance(envelope, dict):
            raise MessageError("root: not a signed envelope")
        root = RootDocument.from_dict(envelope.get("signed"))
        verify_envelope(envelope, root.root_key_map(), threshold=root.root_threshold, what="root")
        return cls(root)

    @property
    def version(self) -> int:
        return self.root.version

    @property
    def expires(self) -> datetime:
        return from_iso(self.root.expires, what="root expiry")

    def is_expired(self, now: datetime) -> bool:
        return self.expires <= now

    def signing_keys(self) -> list[PublicKey]:
        """The keys that may sign bundles and desired state under this root."""
        return self.root.signing_public_keys()

    def update(self, envelope: dict, now: datetime) -> "TrustedRoot":
        """Accept root version N+1, signed by thresholds of the current and the new root keys, unexpired."""
        return self.update_chain([envelope], now)

    def update_chain(self, envelopes: list[dict], now: datetime) -> "TrustedRoot":
        """Walk roots N+1, N+2, ... in order; only the last one must be unexpired."""
        if not envelopes:
            raise ValueError("no root to update to")
        trusted = self
        for envelope in envelopes:
            trusted = trusted._next(envelope)
        if trusted.is_expired(now):
            raise ExpiredError(f"root version {trusted.version} expired at {trusted.root.expires}")
        return trusted

    def _next(self, envelope: dict) -> "TrustedRoot":
        what = f"root after version {self.version}"
        signed = verify_envelope(envelope, self.root.root_key_map(), threshold=self.root.root_threshold,
                                 what=f"{what} (current root keys)")
        new = RootDocument.from_dict(signed)
        if new.version <= self.version:
            raise RollbackError(f"root version {new.version} is not newer than trusted version {self.version}")
        if new.version != self.version + 1:
            raise BadDataError(f"root version {new.version} skips versions after {self.version}",
                               code="root_version_gap")
        verify_envelope(envelope, new.root_key_map(), threshold=new.root_threshold,
                        what=f"root version {new.version} (its own root keys)")
        return TrustedRoot(new)


# --- device certificates ---------------------------------------------------------------------------


def make_csr(device_id: str, key_pem: bytes) -> bytes:
    """A CSR (PEM) with CN = ``device_id`` for the EC private key ``key_pem``, which the agent generated
    (``edge_agent.identity.new_device_key_and_csr``) to enroll and renew."""
    if not is_valid_name(device_id):
        raise MessageError(f"invalid device id {device_id!r}")
    from cryptography import x509  # certificates: at enrolment and renewal, not in every agent (B5)
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise MessageError("a device key must be an EC private key")
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM)


def load_certificate(cert_pem: bytes) -> Certificate:
    """Parse one PEM certificate, or raise :class:`MessageError`."""
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificate(cert_pem)
    except (TypeError, ValueError) as exc:
        raise MessageError(f"not a PEM certificate: {exc}") from None


def certificate_expiry(cert_pem: bytes) -> datetime:
    """The certificate's notAfter, timezone-aware UTC."""
    return load_certificate(cert_pem).not_valid_after_utc


def needs_renewal(cert_pem: bytes, now: datetime, renew_before: timedelta = RENEW_BEFORE) -> bool:
    """True once ``now`` is within ``renew_before`` of the certificate's expiry (or past it)."""
    return certificate_expiry(cert_pem) - renew_before <= now
