"""The key ring and the CA in the shared database, sealed, for servers that run as several replicas.

With ``--database-url`` the root keys, the signing key, the root chain, the
CA key and certificate and the revocation state are JSON documents sealed by
:class:`~fleet_server.secret_box.SecretBox` (AES-256-GCM under the operator's
secret key) in :mod:`.store.secrets` rows:

- ``keyring``: root keys, signing key, every root. Made at first start by
  whichever replica inserts it first; the others read back what won. A
  rotation replaces it in one compare-and-swap (root N+1 and its key land
  together, so there is no half-done rotation to finish). Every use of the
  key ring reads the row's version (one primary-key read) and reloads on a
  change, so a replica signs with the new key from its first signature
  after the rotation committed.
- ``ca``: the CA key and certificate, made once like the key ring.
- ``crl``: the revocation list, the CRL number and the CRL last issued;
  changes are compare-and-swap, retried, so revocations made on two replicas
  at once both land.

A document sealed under another key, or altered, refuses to open with a
clear error (:mod:`.secret_box`) and the server does not start. Nothing here
touches files; :class:`.keys.KeyFiles` and :class:`.ca.CaFiles` are the
single-server default.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fleet_protocol.root import load_certificate
from fleet_protocol.signing import SigningKey
from fleet_protocol.timestamps import to_iso

from .ca import load_ca_key, new_revocations, private_key_pem, self_signed_ca
from .clock import utc_now
from .keys import KeyMaterial, RootSigner, RotationConflict, new_signing_key
from .secret_box import SecretBox
from .store import Database
from .store import secrets as secret_store

KEYRING, CA, CRL = "keyring", "ca", "crl"
MAX_CRL_ATTEMPTS = 20  # compare-and-swap retries while other replicas revoke at the same moment
WHERE = "the database (sealed with AES-256-GCM under the server's secret key)"


class SealedDocuments:
    """Named JSON documents, sealed, each with a version that goes up by one per change."""

    def __init__(self, db: Database, box: SecretBox):
        self._db = db
        self._box = box

    def read(self, name: str) -> tuple[int, dict] | None:
        row = secret_store.get_secret(db=self._db, name=name)
        if row is None:
            return None
        return row["version"], json.loads(self._box.open(name, row["sealed"], key_id=row["key_id"]))

    def version(self, name: str) -> int | None:
        return secret_store.secret_version(db=self._db, name=name)

    def create(self, name: str, document: dict) -> tuple[int, dict, bool]:
        """Store ``document`` unless ``name`` exists; return what is stored now and whether it is this one."""
        created = secret_store.insert_secret(db=self._db, name=name, key_id=self._box.key_id,
                                             sealed=self._seal(name, document), updated=to_iso(utc_now()))
        version, stored = self.read(name)
        return version, stored, created

    def replace(self, name: str, document: dict, *, version: int) -> bool:
        """Replace ``name`` if it is still at ``version``; False when another replica changed it first."""
        return secret_store.replace_secret(db=self._db, name=name, version=version, key_id=self._box.key_id,
                                           sealed=self._seal(name, document), updated=to_iso(utc_now()))

    def _seal(self, name: str, document: dict) -> bytes:
        return self._box.seal(name, json.dumps(document, sort_keys=True).encode("utf-8"))


class SharedKeyStorage:
    """:class:`~fleet_server.keys.KeyStorage` in the ``keyring`` document."""

    where = WHERE

    def __init__(self, documents: SealedDocuments):
        self._docs = documents
        self._version = 0

    def load_or_create(self, sign_root: RootSigner) -> tuple[KeyMaterial, bool]:
        found = self._docs.read(KEYRING)
        if found is not None:
            self._version, document = found
            return _material(document), False
        root_key, signing_key = new_signing_key(), new_signing_key()
        fresh = KeyMaterial((root_key,), signing_key, (sign_root(1, [root_key], signing_key, None),))
        self._version, document, created = self._docs.create(KEYRING, _document(fresh))
        return _material(document), created

    def current(self, held: KeyMaterial) -> KeyMaterial:
        if self._docs.version(KEYRING) == self._version:
            return held
        self._version, document = self._docs.read(KEYRING)
        return _material(document)

    def save_rotation(self, old: KeyMaterial, new: KeyMaterial) -> None:
        if not self._docs.replace(KEYRING, _document(new), version=self._version):
            raise RotationConflict("another server rotated the signing key at the same moment; nothing was "
                                   "rotated here (`edgefleet keys show` shows the root now in force)")
        self._version += 1


def _document(material: KeyMaterial) -> dict:
    return {"root_keys": [key.to_pem().decode("ascii") for key in material.root_keys],
            "signing_key": material.signing_key.to_pem().decode("ascii"), "roots": list(material.roots)}


def _material(document: dict) -> KeyMaterial:
    return KeyMaterial(tuple(SigningKey.from_pem(pem.encode("ascii")) for pem in document["root_keys"]),
                       SigningKey.from_pem(document["signing_key"].encode("ascii")), tuple(document["roots"]))


class SharedCaStorage:
    """:class:`~fleet_server.ca.CaStorage` in the ``ca`` and ``crl`` documents."""

    where = WHERE

    def __init__(self, documents: SealedDocuments):
        self._docs = documents

    def load_or_create(self, name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        found = self._docs.read(CA)
        if found is None:
            key = ec.generate_private_key(ec.SECP256R1())
            cert = self_signed_ca(key, name)
            _, document, _ = self._docs.create(CA, {
                "key": private_key_pem(key).decode("ascii"),
                "certificate": cert.public_bytes(serialization.Encoding.PEM).decode("ascii")})
        else:
            document = found[1]
        key = load_ca_key(document["key"].encode("ascii"), where="the database's CA key")
        return key, load_certificate(document["certificate"].encode("ascii"))

    def crl(self) -> bytes | None:
        found = self._docs.read(CRL)
        return found[1]["pem"].encode("ascii") if found is not None else None

    def update_crl(self, issue: Callable[[dict, bytes | None], bytes | None]) -> bytes:
        for _ in range(MAX_CRL_ATTEMPTS):
            found = self._docs.read(CRL)
            document = found[1] if found is not None else {**new_revocations(), "pem": None}
            state = {"crl_number": document["crl_number"], "revoked": document["revoked"]}
            current = document["pem"].encode("ascii") if document["pem"] else None
            pem = issue(state, current)
            if pem is None:
                return current
            changed = {**state, "pem": pem.decode("ascii")}
            if found is None:
                stored = self._docs.create(CRL, changed)[2]
            else:
                stored = self._docs.replace(CRL, changed, version=found[0])
            if stored:
                return pem
        raise RotationConflict(f"the CRL changed under this replica {MAX_CRL_ATTEMPTS} times in a row; try again",
                               code="crl_conflict")
