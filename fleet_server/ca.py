"""The fleet's certificate authority: device client certificates, broker TLS, revocation.

One EC P-256 CA key (``ca.key``, mode 0600, directory 0700) and a self-signed
CA certificate (``ca.crt``, 10 years), created at first use. The CA signs

- device client certificates from CSRs (CN = device id, clientAuth), after
  checking the CSR's signature, its CN and its key (EC P-256/P-384, Ed25519,
  RSA >= 2048; Mosquitto 2.0 with OpenSSL 3 accepts Ed25519 client
  certificates, but the CA key itself is P-256, which every TLS stack takes);
- the broker's TLS server certificate (serverAuth, DNS and IP SANs);
- the fleet server's own MQTT client identity (CN ``edgefleet-server``).

A revoke re-issues the CRL at once. A CRL expires (``nextUpdate``): the
broker then refuses *every* client, so callers must fetch
:meth:`CertificateAuthority.crl_pem` regularly (it re-issues a CRL past half
its lifetime) and hand it to the broker. The device side (key, CSR, renewal
check) lives in :mod:`fleet_protocol.root`.

Where the key, certificate, revocations and CRL live is a :class:`CaStorage`:

- :class:`CaFiles` (the SQLite default): ``ca.key``, ``ca.crt``,
  ``revoked.json`` and ``crl.pem`` in one directory (temp file + fsync +
  ``os.replace``); one process owns it.
- :class:`fleet_server.shared_secrets.SharedCaStorage` (``--database-url``):
  sealed rows in the shared database, created once however many replicas
  start at once; revocations from two replicas at once both land.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Callable
from datetime import datetime, timedelta
from ipaddress import ip_address
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fleet_protocol.errors import BadDataError, EdgefleetError
from fleet_protocol.fields import is_valid_name
from fleet_protocol.root import load_certificate
from fleet_protocol.timestamps import from_iso, to_iso

from .clock import utc_now

log = logging.getLogger(__name__)
SERVER_IDENTITY = "edgefleet-server"
CA_VALID_DAYS = 3650
CRL_VALID = timedelta(days=7)
BACKDATE = timedelta(minutes=1)
MIN_RSA_BITS = 2048
ALLOWED_CURVES = (ec.SECP256R1, ec.SECP384R1)
WEAK_DIGESTS = (hashes.MD5, hashes.SHA1, hashes.SHA224)
RESERVED_NAMES = frozenset({SERVER_IDENTITY})


def replica_identity(replica: str) -> str:
    """The client certificate CN (the MQTT username and client id) of one server replica."""
    return f"{SERVER_IDENTITY}.{replica}"


def is_reserved_name(name: str) -> bool:
    """The server's identities (``edgefleet-server`` and its replicas' ``edgefleet-server.<name>``): no device's."""
    return name in RESERVED_NAMES or name.startswith(f"{SERVER_IDENTITY}.")


class CertificateRequestError(BadDataError):
    """A CSR the CA will not sign: bad signature, wrong name, weak or unsupported key."""

    code = "bad_csr"


class CaStorage(Protocol):
    """Where a :class:`CertificateAuthority` keeps its key, certificate, revocations and CRL."""

    where: str

    def load_or_create(self, name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """The CA key and certificate, made (:func:`self_signed_ca`) at first use."""

    def crl(self) -> bytes | None:
        """The CRL last issued (PEM), None before the first."""

    def update_crl(self, issue: Callable[[dict, bytes | None], bytes | None]) -> bytes:
        """Call ``issue(state, crl)`` on the current revocation state (``{"crl_number", "revoked"}``, changed in
        place) and CRL; store both when it returns a new CRL. Returns the CRL now stored."""


class CertificateAuthority:
    """Issues and revokes the fleet's X.509 certificates; its state in a :class:`CaStorage`."""

    def __init__(self, storage: CaStorage, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate):
        self.storage = storage
        self._key = key
        self.certificate = cert

    def __repr__(self) -> str:  # keep the key out of logs and tracebacks
        return f"CertificateAuthority({self.storage.where}, {self.certificate.subject.rfc4514_string()})"

    @classmethod
    def open(cls, storage: CaStorage, *, name: str = "edgefleet fleet CA") -> "CertificateAuthority":
        """The CA in ``storage``, creating its key and certificate at first use."""
        return cls(storage, *storage.load_or_create(name))

    @classmethod
    def load_or_create(cls, directory: Path, *, name: str = "edgefleet fleet CA") -> "CertificateAuthority":
        """The CA in the files of ``directory`` (:class:`CaFiles`)."""
        return cls.open(CaFiles(directory), name=name)

    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    # --- issuing -------------------------------------------------------------------------------

    def sign_csr(self, csr_pem: bytes, *, device_id: str, valid_days: int = 90,
                 now: datetime | None = None) -> bytes:
        """A PEM client certificate for ``device_id`` from its CSR, or :class:`CertificateRequestError`."""
        if not is_valid_name(device_id) or is_reserved_name(device_id):
            raise CertificateRequestError(f"{device_id!r} is not a valid device id")
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
            public_key, digest, signature_ok = csr.public_key(), csr.signature_hash_algorithm, csr.is_signature_valid
        except (TypeError, ValueError, UnsupportedAlgorithm) as exc:
            raise CertificateRequestError(f"not a PEM certificate signing request this CA can read: {exc}") from None
        if isinstance(digest, WEAK_DIGESTS):
            raise CertificateRequestError(f"the CSR is signed with {digest.name}, which is too weak")
        if not signature_ok:
            raise CertificateRequestError("the CSR's signature does not verify")
        names = [attr.value for attr in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        if names != [device_id]:
            raise CertificateRequestError(f"the CSR names {names!r}, expected the single common name {device_id!r}")
        _check_key(public_key)
        cert = self._issue(device_id, public_key, ExtendedKeyUsageOID.CLIENT_AUTH, valid_days=valid_days,
                           now=now or utc_now())
        return cert.public_bytes(serialization.Encoding.PEM)

    def issue_server_certificate(self, hostnames: list[str], ips: list[str], *,
                                 valid_days: int = 365) -> tuple[bytes, bytes]:
        """A new key and certificate (PEM) for the broker's TLS listener, with DNS and IP SANs."""
        sans = [x509.DNSName(h) for h in hostnames] + [x509.IPAddress(ip_address(ip)) for ip in ips]
        if not sans:
            raise ValueError("a server certificate needs at least one hostname or IP address")
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._issue((hostnames or ips)[0], key.public_key(), ExtendedKeyUsageOID.SERVER_AUTH,
                           valid_days=valid_days, now=utc_now(), sans=sans)
        return private_key_pem(key), cert.public_bytes(serialization.Encoding.PEM)

    def issue_client_identity(self, common_name: str = SERVER_IDENTITY, *,
                              valid_days: int = 365) -> tuple[bytes, bytes]:
        """A new key and client certificate (PEM), e.g. the fleet server's privileged MQTT identity."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._issue(common_name, key.public_key(), ExtendedKeyUsageOID.CLIENT_AUTH,
                           valid_days=valid_days, now=utc_now())
        return private_key_pem(key), cert.public_bytes(serialization.Encoding.PEM)

    def _issue(self, common_name: str, public_key, usage: x509.ObjectIdentifier, *, valid_days: int,
               now: datetime, sans: list[x509.GeneralName] | None = None) -> x509.Certificate:
        if valid_days < 1:
            raise ValueError("valid_days must be at least 1")
        not_after = min(now + timedelta(days=valid_days), self.certificate.not_valid_after_utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True,
                                      key_encipherment=isinstance(public_key, rsa.RSAPublicKey)), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                           critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(self._key, hashes.SHA256())

    # --- revocation ----------------------------------------------------------------------------

    def revoke(self, serial: int, *, reason: str, now: datetime | None = None) -> None:
        """Revoke a certificate by serial (idempotent) and re-issue the CRL. ``reason``: a ReasonFlags name."""
        try:
            flag = x509.ReasonFlags[reason]
        except KeyError:
            raise ValueError(f"unknown revocation reason {reason!r}; one of {[f.name for f in x509.ReasonFlags]}") \
                from None
        now = now or utc_now()

        def issue(state: dict, _crl: bytes | None) -> bytes:
            if all(entry["serial"] != serial for entry in state["revoked"]):
                state["revoked"].append({"serial": serial, "reason": flag.name, "revoked_at": to_iso(now)})
            return self._issue_crl(state, now)

        self.storage.update_crl(issue)

    def crl_pem(self, *, now: datetime | None = None) -> bytes:
        """The current CRL (PEM), re-issued when missing or past half its validity."""
        now = now or utc_now()

        def fresh(pem: bytes | None) -> bool:
            if pem is None:
                return False
            crl = x509.load_pem_x509_crl(pem)
            return now < crl.next_update_utc - CRL_VALID / 2 and crl.last_update_utc <= now

        pem = self.storage.crl()
        if fresh(pem):
            return pem
        return self.storage.update_crl(lambda state, crl: None if fresh(crl) else self._issue_crl(state, now))

    def _issue_crl(self, state: dict, now: datetime) -> bytes:
        """The next CRL for ``state`` (its ``crl_number`` goes up); the caller's storage keeps both."""
        state["crl_number"] += 1
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.certificate.subject)
            .last_update(now - BACKDATE)
            .next_update(now + CRL_VALID)
            .add_extension(x509.CRLNumber(state["crl_number"]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                           critical=False)
        )
        for entry in state["revoked"]:
            revoked = (x509.RevokedCertificateBuilder().serial_number(entry["serial"])
                       .revocation_date(from_iso(entry["revoked_at"])))
            if entry["reason"] != x509.ReasonFlags.unspecified.name:  # RFC 5280 §5.3.1: omit "unspecified"
                revoked = revoked.add_extension(x509.CRLReason(x509.ReasonFlags[entry["reason"]]), critical=False)
            builder = builder.add_revoked_certificate(revoked.build())
        return builder.sign(self._key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


class CaFiles:
    """The CA in one directory (0700): ``ca.key`` (0600), ``ca.crt``, ``revoked.json`` (0600), ``crl.pem``."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.where = str(self.directory)

    def load_or_create(self, name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        directory = self.directory
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        key_path, cert_path = directory / "ca.key", directory / "ca.crt"
        if key_path.exists():
            if stat.S_IMODE(key_path.stat().st_mode) & 0o077:
                log.warning("CA key %s is readable by others; setting it to 0600", key_path)
                os.chmod(key_path, 0o600)
            key = load_ca_key(key_path.read_bytes(), where=str(key_path))
        elif cert_path.exists():
            raise EdgefleetError(f"{cert_path} exists but its key {key_path} is missing", code="ca_key_missing")
        else:
            key = ec.generate_private_key(ec.SECP256R1())
            write_atomic(key_path, private_key_pem(key), mode=0o600)
        if cert_path.exists():
            cert = load_certificate(cert_path.read_bytes())
            if cert.public_key() != key.public_key():
                raise EdgefleetError(f"{cert_path} does not belong to {key_path}", code="ca_key_invalid")
        else:  # first start, or a crash between writing the key and the certificate
            cert = self_signed_ca(key, name)
            write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
        return key, cert

    def crl(self) -> bytes | None:
        path = self.directory / "crl.pem"
        return path.read_bytes() if path.exists() else None

    def update_crl(self, issue: Callable[[dict, bytes | None], bytes | None]) -> bytes:
        path = self.directory / "revoked.json"
        state = json.loads(path.read_bytes()) if path.exists() else new_revocations()
        current = self.crl()
        pem = issue(state, current)
        if pem is None:
            return current
        write_atomic(path, json.dumps(state, indent=1).encode(), mode=0o600)
        write_atomic(self.directory / "crl.pem", pem, mode=0o644)
        return pem


def new_revocations() -> dict:
    """The revocation state of a CA that has revoked nothing and issued no CRL."""
    return {"crl_number": 0, "revoked": []}


def load_ca_key(pem: bytes, *, where: str) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise EdgefleetError(f"{where} does not hold an EC private key", code="ca_key_invalid")
    return key


def self_signed_ca(key: ec.EllipticCurvePrivateKey, name: str) -> x509.Certificate:
    """A new CA certificate for ``key`` (10 years, path length 0)."""
    now = utc_now()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + timedelta(days=CA_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def _key_usage(*, digital_signature: bool = False, key_encipherment: bool = False, key_cert_sign: bool = False,
               crl_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=digital_signature, content_commitment=False,
                         key_encipherment=key_encipherment, data_encipherment=False, key_agreement=False,
                         key_cert_sign=key_cert_sign, crl_sign=crl_sign, encipher_only=False, decipher_only=False)


def _check_key(public_key: object) -> None:
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if not isinstance(public_key.curve, ALLOWED_CURVES):
            raise CertificateRequestError(f"EC curve {public_key.curve.name} is not accepted (P-256 or P-384)")
    elif isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < MIN_RSA_BITS:
            raise CertificateRequestError(f"RSA key of {public_key.key_size} bits is too weak "
                                          f"(at least {MIN_RSA_BITS})")
    elif not isinstance(public_key, ed25519.Ed25519PublicKey):
        raise CertificateRequestError(
            f"{type(public_key).__name__} keys are not accepted (EC P-256/P-384, Ed25519 or RSA)")


def private_key_pem(key) -> bytes:
    """PKCS#8 PEM, unencrypted: the file mode (0600) protects it."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def write_atomic(path: Path, data: bytes, *, mode: int) -> None:
    """Write ``data`` to ``path`` with ``mode`` via temp file + fsync + ``os.replace`` + directory fsync."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), mode)
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
