"""Ed25519 public keys are their raw 32 bytes until they first verify (cryptography loads on first use, B5):
key ids, equality and refusals stay what they were when the key object came from cryptography at once."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives import serialization

from fleet_protocol.errors import SignatureError
from fleet_protocol.signing import PublicKey, SigningKey, sign_envelope, verify_envelope

SEED = bytes(range(32))


def test_a_public_key_is_its_raw_bytes_and_its_keyid_their_sha256():
    key = SigningKey.from_seed(SEED)
    raw = key.key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert key.public_key.raw == raw and key.public_key.keyid == hashlib.sha256(raw).hexdigest()
    assert PublicKey.from_hex(key.public_key.to_hex()) == key.public_key


@pytest.mark.parametrize("text, reason", [("ab" * 31, "32 bytes long, not 31"), ("zz" * 32, "non-hexadecimal")])
def test_a_public_key_of_the_wrong_length_or_not_hex_is_refused(text, reason):
    with pytest.raises(SignatureError, match=f"not an Ed25519 public key: .*{reason}"):
        PublicKey.from_hex(text)


def test_a_key_built_from_hex_verifies_its_signatures_and_refuses_others():
    key, other = SigningKey.from_seed(SEED), SigningKey.from_seed(bytes(32))
    trusted = {key.public_key.keyid: PublicKey.from_hex(key.public_key.to_hex())}
    assert verify_envelope(sign_envelope({"n": 1}, key), trusted, what="doc") == {"n": 1}
    forged = sign_envelope({"n": 1}, key) | {"signed": {"n": 2}}
    with pytest.raises(SignatureError, match="does not verify"):
        verify_envelope(forged, trusted, what="doc")
    with pytest.raises(SignatureError, match="untrusted key"):
        verify_envelope(sign_envelope({"n": 1}, other), trusted, what="doc")
