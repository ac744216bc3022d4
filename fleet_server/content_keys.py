"""Bundle content keys on the server: one random key per bundle, wrapped for each device it is assigned to.

The chunk sender encrypts every chunk it publishes with its bundle's key
(:func:`fleet_protocol.bundle_crypto.encrypt_chunk`); the desired state of a
device the bundle is assigned to carries that key wrapped for the device's
certificate keys (:meth:`ContentKeys.for_device`). A key is made on first use
(``secrets``) and kept in the database (:mod:`.store.bundle_keys`), sealed
under the server's secret key when the database is shared by replicas
(:mod:`.secret_box`, as the signing keys are); it is never logged and never
leaves in an API model.

Whom a key is wrapped for: the EC keys (P-256, P-384) of the device's newest
:data:`MAX_RECIPIENTS` unrevoked, unexpired certificates, so the old and the
renewed key both open it while a renewal is in flight. A device with no
certificate at all (configured by hand, not enrolled: the demo and the
simulator on a plain broker) gets the key in the clear inside its signed
desired state: on a plain broker there is no confidentiality at all.

A device that holds certificates but none the server can wrap for (issued
before the server recorded certificate keys: the column was added with a NULL
for older rows, and the server keeps no copy of the certificate to read it
from; or an Ed25519 or RSA key) never gets a key in the clear:
:meth:`ContentKeys.unavailable` says why (``content_key_unavailable``), its
desired state keeps only the modules it already had (held back, without new
keys) until its certificate is renewed, and the error is shown per device.
"""

from __future__ import annotations

import secrets
import threading

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import Certificate

from fleet_protocol import bundle_crypto
from fleet_protocol.timestamps import from_iso, to_iso

from .clock import utc_now
from .secret_box import KEY_BYTES, SecretBox, SecretKeyError, TamperedSecretError
from .store import Database
from .store import bundle_keys as bundle_key_store
from .store import enrollments as enrollment_store

MAX_RECIPIENTS = 3
UNAVAILABLE_CODE = "content_key_unavailable"


def certificate_public_key(cert: Certificate) -> str:
    """What :func:`.store.enrollments.add_certificate` keeps of a certificate to wrap content keys for (PEM)."""
    return cert.public_key().public_bytes(serialization.Encoding.PEM,
                                          serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


class ContentKeys:
    def __init__(self, db: Database, box: SecretBox | None = None):
        self._db = db
        self._box = box  # with a shared database: keys are stored sealed, like the signing keys
        self._keys: dict[str, bytes] = {}  # bundle digest -> key (a key never changes once made)
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # keep the keys out of logs and tracebacks
        return f"ContentKeys({len(self._keys)} cached)"

    def bundle_key(self, digest: str) -> bytes:
        """The bundle's content key, made now if it has none."""
        with self._lock:
            key = self._keys.get(digest)
        if key is None:
            stored = bundle_key_store.get_or_add(db=self._db, digest=digest,
                                                 new_key=self._seal(digest, secrets.token_bytes(32)),
                                                 created=to_iso(utc_now()))
            key = self._open(digest, stored)
            with self._lock:
                self._keys[digest] = key
        return key

    def _seal(self, digest: str, key: bytes) -> bytes:
        return key if self._box is None else self._box.seal(f"bundle_keys/{digest}", key)

    def _open(self, digest: str, stored: bytes) -> bytes:
        if self._box is None:
            if len(stored) != KEY_BYTES:
                raise SecretKeyError(f"the content key of bundle {digest} is sealed: start the server with the "
                                     "database's secret key")
            return stored
        if len(stored) == KEY_BYTES:  # never written sealed: a database writer could choose the key
            raise TamperedSecretError(f"the content key of bundle {digest} is stored unsealed")
        return self._box.open(f"bundle_keys/{digest}", stored, key_id=self._box.key_id)

    def recipients(self, device_id: str) -> list[ec.EllipticCurvePublicKey]:
        """The device's keys a content key is wrapped for (newest first, each once: two certificates for one key,
        a renewal answered twice, wrap for it once); empty: it gets the key in the clear."""
        now = utc_now()
        keys, seen = [], set()
        for cert in enrollment_store.certificates(db=self._db, device_id=device_id):
            if cert["revoked"] is not None or from_iso(cert["not_after"]) <= now or not cert.get("public_key"):
                continue
            if cert["public_key"] in seen:
                continue
            seen.add(cert["public_key"])
            key = serialization.load_pem_public_key(cert["public_key"].encode("ascii"))
            if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in bundle_crypto.CURVE_NAMES:
                keys.append(key)
            if len(keys) == MAX_RECIPIENTS:
                break
        return keys

    def unavailable(self, device_id: str, recipients: list[ec.EllipticCurvePublicKey]) -> dict | None:
        """Why no bundle key can go to this device (None: it can), given its :meth:`recipients`: it holds
        certificates (it is enrolled) but none with a key to wrap for, and it must never get one in the clear."""
        if recipients or not enrollment_store.certificates(db=self._db, device_id=device_id):
            return None
        return {"code": UNAVAILABLE_CODE, "category": "security", "message": (
            f"device {device_id} is enrolled but the server holds no key of its certificates to wrap bundle keys "
            "for (a certificate issued before the server recorded certificate keys, or not an EC P-256/P-384 "
            "key), so no new bundle is sent to it; renew the device's certificate (the agent renews "
            "cert_renew_before_s before expiry; set it above the time left, or re-enroll the device)")}

    def for_device(self, device_id: str, digest: str, recipients: list[ec.EllipticCurvePublicKey],
                   current: dict | None = None, *, plain: bool = True) -> dict | None:
        """The ``content_key`` of ``digest`` in ``device_id``'s desired state: ``current`` (what its last document
        carried) while it is for exactly these recipients, so a re-issued document keeps its modules unchanged.

        With no recipients and ``plain`` false (see :meth:`unavailable`): ``current`` if it is wrapped, else None,
        never the key in the clear."""
        if not recipients and not plain:
            return current if current is not None and current.get("alg") == bundle_crypto.WRAP_ALG else None
        if current is not None and _recipients_of(current) == sorted(bundle_crypto.key_id(r) for r in recipients):
            return current
        key = self.bundle_key(digest)
        if not recipients:
            return bundle_crypto.plain_key_doc(key)
        return bundle_crypto.wrapped_key_doc([
            bundle_crypto.wrap_content_key(key, device_id=device_id, bundle_digest=digest, recipient=recipient,
                                           ephemeral=ec.generate_private_key(recipient.curve))
            for recipient in recipients])


def _recipients_of(doc: dict) -> list[str] | None:
    """The sorted key ids a stored ``content_key`` is wrapped for ([] when plain; None when unreadable)."""
    if doc.get("alg") == bundle_crypto.PLAIN_ALG:
        return []
    wraps = doc.get("wraps") if doc.get("alg") == bundle_crypto.WRAP_ALG else None
    return sorted(w.get("kid") for w in wraps if isinstance(w, dict)) if isinstance(wraps, list) else None
