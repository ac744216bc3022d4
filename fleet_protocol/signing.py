"""Ed25519 keys and signed envelopes (from the ``cryptography`` package).

An envelope is ``{"signed": {...}, "signatures": [{"keyid": hex, "sig": hex}]}``;
the signature covers the canonical JSON of ``signed``. A key id is the SHA-256
of the raw 32-byte public key. Reading and writing key files is the caller's
job (with mode 0600), and so is generating a key (a random seed); this module
only turns bytes into keys and back.

``cryptography`` is imported at the first key operation (:func:`_ed25519`),
not with this module: its Rust extension is about 7 MB resident, and an agent
that has no signed document to check yet (idle, no module) need not hold it.
A :class:`PublicKey` is its 32 raw bytes until it first verifies.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from types import ModuleType
from typing import TYPE_CHECKING

from .canonical import canonical_json, sha256_hex
from .errors import SignatureError
from .fields import field

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

PUBLIC_KEY_BYTES = 32


def _ed25519() -> ModuleType:
    """``cryptography``'s Ed25519 module, imported on first use (see the module docstring)."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return ed25519


@dataclass(frozen=True)
class PublicKey:
    """An Ed25519 public key (its raw 32 bytes) that verifies signatures."""

    raw: bytes

    def __post_init__(self):
        if len(self.raw) != PUBLIC_KEY_BYTES:  # all cryptography checks when it loads a raw Ed25519 public key
            raise SignatureError(f"not an Ed25519 public key: it is {PUBLIC_KEY_BYTES} bytes long, "
                                 f"not {len(self.raw)}")

    @classmethod
    def from_hex(cls, value: str) -> "PublicKey":
        try:
            return cls(bytes.fromhex(value))
        except ValueError as exc:
            raise SignatureError(f"not an Ed25519 public key: {exc}") from None

    def to_hex(self) -> str:
        return self.raw.hex()

    @property
    def keyid(self) -> str:
        return sha256_hex(self.raw)

    @cached_property
    def key(self) -> "Ed25519PublicKey":
        return _ed25519().Ed25519PublicKey.from_public_bytes(self.raw)

    def verify(self, signature: bytes, data: bytes) -> None:
        from cryptography.exceptions import InvalidSignature

        try:
            self.key.verify(signature, data)
        except InvalidSignature:
            raise SignatureError(f"signature by key {self.keyid[:12]} does not verify") from None


@dataclass(frozen=True)
class SigningKey:
    """An Ed25519 private key; never logged, never sent."""

    key: "Ed25519PrivateKey"

    @classmethod
    def from_seed(cls, seed: bytes) -> "SigningKey":
        """The key whose 32-byte Ed25519 private seed is ``seed``. Drawing the seed from a CSPRNG is the
        caller's job (``fleet_server.keys.new_signing_key``): this package holds no randomness."""
        if len(seed) != 32:
            raise ValueError(f"an Ed25519 seed is 32 bytes, got {len(seed)}")
        return cls(_ed25519().Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def from_pem(cls, data: bytes) -> "SigningKey":
        from cryptography.hazmat.primitives import serialization

        key = serialization.load_pem_private_key(data, password=None)
        if not isinstance(key, _ed25519().Ed25519PrivateKey):
            raise SignatureError("signing key file does not hold an Ed25519 private key")
        return cls(key)

    def to_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    @property
    def public_key(self) -> PublicKey:
        from cryptography.hazmat.primitives import serialization

        raw = self.key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return PublicKey(raw)

    def __repr__(self) -> str:  # keep the key out of logs and tracebacks
        return f"SigningKey(keyid={self.public_key.keyid[:12]}…)"


def sign_envelope(signed: dict, key: SigningKey) -> dict:
    """Wrap ``signed`` in an envelope signed by ``key``."""
    signature = key.key.sign(canonical_json(signed))
    return {"signed": signed, "signatures": [{"keyid": key.public_key.keyid, "sig": signature.hex()}]}


def verify_envelope(envelope: dict, trusted: dict[str, PublicKey], *, threshold: int = 1, what: str) -> dict:
    """Return ``envelope["signed"]`` if at least ``threshold`` trusted keys signed it."""
    if not isinstance(envelope, dict):
        raise SignatureError(f"{what}: not a signed envelope")
    signed = field(envelope, "signed", dict, where=what, error=SignatureError)
    signatures = field(envelope, "signatures", list, where=what, error=SignatureError)
    if not signatures:
        raise SignatureError(f"{what} is unsigned")
    data = canonical_json(signed)
    good: set[str] = set()
    unknown: list[str] = []
    for entry in signatures:
        if not isinstance(entry, dict):
            raise SignatureError(f"{what}: malformed signature entry")
        keyid = field(entry, "keyid", str, where=what, error=SignatureError)
        sig_hex = field(entry, "sig", str, where=what, error=SignatureError)
        key = trusted.get(keyid)
        if key is None:
            unknown.append(keyid[:12])
            continue
        try:
            key.verify(bytes.fromhex(sig_hex), data)
        except ValueError:
            raise SignatureError(f"{what}: signature is not hex") from None
        good.add(keyid)
    if len(good) < threshold:
        if unknown and not good:
            raise SignatureError(f"{what} is signed by an untrusted key ({', '.join(unknown)})")
        raise SignatureError(f"{what} has {len(good)} valid signature(s), {threshold} required")
    return signed
