"""Confidentiality of bundle content: chunks encrypted per bundle, the bundle's key wrapped for each device.

Integrity is not decided here: the manifest's digests stay over plaintext and
the agent checks them after decrypting, exactly as before, so a cache or broker
is never trusted. This module only keeps a device that is not assigned a bundle
from reading it. Pure functions over bytes: no I/O, no randomness (the caller
passes the random content key and the ephemeral key pair in).

Chunks on the shared topic (:func:`encrypt_chunk`)::

    b"EFE2" + chunk id (32 bytes) + AES-256-GCM(content key, nonce, plaintext, aad)
    chunk id = HMAC-SHA256(HMAC-SHA256(content key, b"edgefleet chunk id v2"), plaintext SHA-256 (raw))
    nonce    = SHA-256(b"edgefleet chunk nonce v2" + chunk id)[:12]
    aad      = b"edgefleet chunk v2" + bundle digest (hex, ASCII) + chunk id

The header names the chunk by a keyed id, not by its plaintext digest: a
listener without the bundle's key (a device the bundle is not assigned to)
cannot tell which chunks equal chunks it already knows. A device with the key
maps ids back to the manifest's digests (:func:`chunk_id`); requests name
plaintext digests, on the device's own topic only the server reads.

Why AES-256-GCM with a nonce derived from the chunk's digest, and not a random
one: the chunk sender publishes the same chunk again for late joiners, and a
bundle's chunks are content-addressed, so the same key only ever encrypts a
given plaintext under the nonce derived from *that plaintext's* digest (through
its id). Two different chunks get different nonces (a nonce collision needs a SHA-256
collision in 96 bits: about 2^-96 x n^2 for n chunks), and the same chunk twice
gives the identical ciphertext, which tells a listener nothing it did not know
(that the publish is a repeat). The key is per bundle and never reused across
bundles. AES-GCM-SIV would tolerate nonce reuse as well, but it needs OpenSSL
3.2 in the ``cryptography`` build, which distribution builds on devices do not
all have; GCM is everywhere and, with this nonce rule, never meets reuse of a
nonce with different data.

The content key inside a desired module (signed, device-bound)::

    {"alg": "ecdh-hkdf-sha256-a256gcm", "wraps": [{"kid": hex, "epk": hex, "ct": hex}, ...]}
    {"alg": "plain", "key": hex}

``ecdh-hkdf-sha256-a256gcm`` (ECIES): for each of the device's certificate keys
(P-256 as the agent makes them, or P-384; the newest few unexpired certificates,
so a renewal in flight never locks it out) an ephemeral key on the same curve agrees a secret
with it (ECDH); HKDF-SHA256 over that secret, bound to the device id, the
bundle digest and both public keys, gives a one-time AES-256-GCM key and nonce
that seal the 32-byte content key (aad: device id + bundle digest). ``kid`` is
the SHA-256 of the recipient's SubjectPublicKeyInfo (DER), so a device finds
its own entry. A wrap moved to another device or bundle, or tampered with, does
not open. ``plain`` carries the key as is: the server sends it only to a device
it holds no certificate key for (hand-configured devices on a plain broker: the
demo, the simulator), where there is no confidentiality to give.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import BadDataError, DigestMismatchError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

# cryptography is imported in the functions that seal or open (see fleet_protocol.signing for why): an agent
# that has fetched no encrypted bundle yet does not hold it. Chunk ids and headers need only hashlib.

KEY_BYTES = 32
WRAP_ALG = "ecdh-hkdf-sha256-a256gcm"
CURVE_NAMES = ("secp256r1", "secp384r1")  # the EC curves the fleet CA accepts for device keys (curve.name)
PLAIN_ALG = "plain"
MAX_WRAPS = 8
CHUNK_MAGIC = b"EFE2"
HEADER_BYTES = 36
_TAG_BYTES = 16


class ContentKeyError(BadDataError):
    """A content key that does not open for this device: tampered, for another device, or malformed."""

    code = "content_key_refused"


@dataclass(frozen=True)
class Wrap:
    kid: str  # SHA-256 of the recipient's SubjectPublicKeyInfo (DER), hex
    epk: bytes  # the ephemeral public key, X9.62 uncompressed point
    ct: bytes  # AES-256-GCM(kek, nonce, content key) with its tag

    def to_dict(self) -> dict:
        return {"kid": self.kid, "epk": self.epk.hex(), "ct": self.ct.hex()}


# --- chunks ------------------------------------------------------------------------------------


def chunk_id(key: bytes, chunk_sha: str) -> bytes:
    """The 32-byte id a chunk is published under: only a holder of the bundle's key can compute or read it."""
    id_key = hmac.new(key, b"edgefleet chunk id v2", hashlib.sha256).digest()  # not the AES key itself
    return hmac.new(id_key, bytes.fromhex(chunk_sha), hashlib.sha256).digest()


def _chunk_nonce(cid: bytes) -> bytes:
    return hashlib.sha256(b"edgefleet chunk nonce v2" + cid).digest()[:12]


def _chunk_aad(bundle_digest: str, cid: bytes) -> bytes:
    return b"edgefleet chunk v2" + bundle_digest.encode("ascii") + cid


def encrypt_chunk(key: bytes, bundle_digest: str, data: bytes) -> bytes:
    """The payload for the bundle's chunk topic: header (magic, keyed chunk id) and the sealed chunk."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    cid = chunk_id(key, hashlib.sha256(data).hexdigest())
    return CHUNK_MAGIC + cid + AESGCM(key).encrypt(_chunk_nonce(cid), data, _chunk_aad(bundle_digest, cid))


def split_chunk(payload: bytes) -> tuple[bytes, bytes]:
    """``(chunk id, sealed bytes)`` of an encrypted chunk payload; nothing is decrypted yet."""
    if len(payload) < HEADER_BYTES + _TAG_BYTES or payload[:4] != CHUNK_MAGIC:
        raise DigestMismatchError(f"chunk payload has no {CHUNK_MAGIC.decode()} header (not an encrypted chunk)")
    return payload[4:HEADER_BYTES], payload[HEADER_BYTES:]


def decrypt_chunk(key: bytes, bundle_digest: str, cid: bytes, sealed: bytes) -> bytes:
    """The plaintext of a sealed chunk; :class:`DigestMismatchError` (``chunk_undecryptable``) if it does not open.

    The caller still checks the plaintext against the manifest (size and SHA-256) under the digest it mapped
    ``cid`` to.
    """
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    try:
        return AESGCM(key).decrypt(_chunk_nonce(cid), sealed, _chunk_aad(bundle_digest, cid))
    except InvalidTag:
        raise DigestMismatchError(f"chunk {cid.hex()[:12]} does not decrypt with the bundle's content key "
                                  "(tampered, or sealed for another bundle)", code="chunk_undecryptable") from None


# --- wrapping the content key for one device ---------------------------------------------------


def key_id(public_key: ec.EllipticCurvePublicKey) -> str:
    """The id a wrap names its recipient by: SHA-256 of the SubjectPublicKeyInfo (DER), hex."""
    from cryptography.hazmat.primitives import serialization

    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def _point(public_key: ec.EllipticCurvePublicKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def _kek(shared: bytes, *, device_id: str, bundle_digest: str, kid: str, epk: bytes) -> tuple[bytes, bytes]:
    """The one-time key and nonce that seal a content key: HKDF-SHA256 bound to device, bundle and both keys."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    info = b"edgefleet content key v1\0" + device_id.encode() + b"\0" + bundle_digest.encode("ascii") + b"\0" + \
        kid.encode("ascii") + b"\0" + epk
    out = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES + 12, salt=None, info=info).derive(shared)
    return out[:KEY_BYTES], out[KEY_BYTES:]


def _wrap_aad(device_id: str, bundle_digest: str) -> bytes:
    return b"edgefleet wrapped key v1\0" + device_id.encode() + b"\0" + bundle_digest.encode("ascii")


def wrap_content_key(content_key: bytes, *, device_id: str, bundle_digest: str,
                     recipient: ec.EllipticCurvePublicKey, ephemeral: ec.EllipticCurvePrivateKey) -> Wrap:
    """Seal ``content_key`` for the holder of ``recipient``'s private key (``ephemeral``: fresh, used once)."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if len(content_key) != KEY_BYTES:
        raise ValueError("a content key is 32 bytes")
    if recipient.curve.name not in CURVE_NAMES or type(recipient.curve) is not type(ephemeral.curve):
        raise ValueError("content keys are wrapped for P-256 or P-384 keys, with an ephemeral key on that curve")
    kid, epk = key_id(recipient), _point(ephemeral.public_key())
    kek, nonce = _kek(ephemeral.exchange(ec.ECDH(), recipient), device_id=device_id, bundle_digest=bundle_digest,
                      kid=kid, epk=epk)
    return Wrap(kid, epk, AESGCM(kek).encrypt(nonce, content_key, _wrap_aad(device_id, bundle_digest)))


def wrapped_key_doc(wraps: list[Wrap]) -> dict:
    return {"alg": WRAP_ALG, "wraps": [w.to_dict() for w in wraps]}


def plain_key_doc(content_key: bytes) -> dict:
    return {"alg": PLAIN_ALG, "key": content_key.hex()}


def open_content_key(doc: object, *, device_id: str, bundle_digest: str,
                     private_key: ec.EllipticCurvePrivateKey | None) -> bytes:
    """The 32-byte content key from a desired module's ``content_key``, for this device and bundle.

    Raises :class:`ContentKeyError`: ``content_key_not_for_device`` when no wrap names this
    device's key (or it has none), ``content_key_refused`` when the wrap is malformed or does not open.
    """
    where = f"content key of bundle {bundle_digest[:12]}"
    if not isinstance(doc, dict):
        raise ContentKeyError(f"{where}: must be an object")
    alg = doc.get("alg")
    if alg == PLAIN_ALG:
        key = _hex(doc.get("key"), where, "key")
        if len(key) != KEY_BYTES:
            raise ContentKeyError(f"{where}: 'key' must be {KEY_BYTES} bytes (hex)")
        return key
    if alg != WRAP_ALG:
        raise ContentKeyError(f"{where}: 'alg' must be {WRAP_ALG!r} or {PLAIN_ALG!r}, got {alg!r}")
    wraps = doc.get("wraps")
    if not isinstance(wraps, list) or not 0 < len(wraps) <= MAX_WRAPS or not all(isinstance(w, dict) for w in wraps):
        raise ContentKeyError(f"{where}: 'wraps' must be a list of 1 to {MAX_WRAPS} objects")
    if private_key is None:
        raise ContentKeyError(f"{where}: it is wrapped for a device key and this device has none (tls_key is not "
                              "set)", code="content_key_not_for_device")
    kid = key_id(private_key.public_key())
    mine = [w for w in wraps if w.get("kid") == kid]
    if not mine:
        raise ContentKeyError(f"{where}: no wrap is for this device's key ({kid[:12]}): it was sealed for another "
                              "device or an older certificate", code="content_key_not_for_device")
    epk, ct = _hex(mine[0].get("epk"), where, "epk"), _hex(mine[0].get("ct"), where, "ct")
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    try:
        peer = ec.EllipticCurvePublicKey.from_encoded_point(private_key.curve, epk)
        kek, nonce = _kek(private_key.exchange(ec.ECDH(), peer), device_id=device_id, bundle_digest=bundle_digest,
                          kid=kid, epk=epk)
        key = AESGCM(kek).decrypt(nonce, ct, _wrap_aad(device_id, bundle_digest))
    except (ValueError, InvalidTag):
        raise ContentKeyError(f"{where}: the wrapped key does not open for device {device_id!r} (tampered, or "
                              "sealed for another device or bundle)") from None
    if len(key) != KEY_BYTES:
        raise ContentKeyError(f"{where}: the unwrapped key is not {KEY_BYTES} bytes")
    return key


def _hex(value: object, where: str, name: str) -> bytes:
    if not isinstance(value, str) or len(value) > 512:
        raise ContentKeyError(f"{where}: {name!r} must be a hex string")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise ContentKeyError(f"{where}: {name!r} must be a hex string") from None

