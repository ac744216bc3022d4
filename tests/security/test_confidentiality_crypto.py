"""Bundle content keys with the real ``cryptography`` primitives: a chunk opens only with its bundle's key, and a
wrapped key only for the device (and certificate key) it was sealed for; the agent's fetcher opening one."""

from __future__ import annotations

import hashlib
import os

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from edge_agent.fetcher import Fetcher
from fleet_protocol import bundle_crypto
from fleet_protocol.bundle_crypto import ContentKeyError
from fleet_protocol.errors import DigestMismatchError, EdgefleetError
from fleet_protocol.manifest import BundleManifest

BUNDLE, OTHER_BUNDLE = "a" * 64, "b" * 64
KEY = os.urandom(32)


def wrapped(device_id: str, *recipients: ec.EllipticCurvePrivateKey, bundle: str = BUNDLE) -> dict:
    return bundle_crypto.wrapped_key_doc([
        bundle_crypto.wrap_content_key(KEY, device_id=device_id, bundle_digest=bundle, recipient=r.public_key(),
                                       ephemeral=ec.generate_private_key(r.curve)) for r in recipients])


def test_a_chunk_opens_only_with_its_bundles_key_and_digest():
    data = os.urandom(4096)
    cid, sealed = bundle_crypto.split_chunk(bundle_crypto.encrypt_chunk(KEY, BUNDLE, data))
    assert cid == bundle_crypto.chunk_id(KEY, hashlib.sha256(data).hexdigest()) and data not in sealed
    assert bundle_crypto.decrypt_chunk(KEY, BUNDLE, cid, sealed) == data
    for key, bundle in ((os.urandom(32), BUNDLE), (KEY, OTHER_BUNDLE)):
        with pytest.raises(DigestMismatchError) as refused:
            bundle_crypto.decrypt_chunk(key, bundle, cid, sealed)
        assert refused.value.code == "chunk_undecryptable"
    flipped = bytes([sealed[0] ^ 1]) + sealed[1:]
    with pytest.raises(DigestMismatchError):
        bundle_crypto.decrypt_chunk(KEY, BUNDLE, cid, flipped)


def test_chunk_header_does_not_reveal_the_plaintext_digest_to_a_listener_without_the_key():
    """A device not assigned the bundle sees only keyed ids: it cannot match them against the digests of
    chunks it knows, and the same chunk in two bundles (two keys) is published under unrelated ids."""
    data = os.urandom(4096)
    sha = hashlib.sha256(data).digest()
    header = bundle_crypto.encrypt_chunk(KEY, BUNDLE, data)[4:bundle_crypto.HEADER_BYTES]
    assert header != sha and sha not in bundle_crypto.encrypt_chunk(KEY, BUNDLE, data)
    other = bundle_crypto.encrypt_chunk(os.urandom(32), OTHER_BUNDLE, data)[4:bundle_crypto.HEADER_BYTES]
    assert other != header


def test_chunk_nonce_is_unique_per_chunk_so_one_key_never_seals_two_plaintexts_under_one_nonce():
    first, second = b"x" * 1000, b"y" * 1000
    a1, a2 = (bundle_crypto.encrypt_chunk(KEY, BUNDLE, first) for _ in range(2))
    assert a1 == a2, "the same chunk published again is the same ciphertext: a repeat reveals nothing new"
    b = bundle_crypto.encrypt_chunk(KEY, BUNDLE, second)
    keystream_a = bytes(x ^ y for x, y in zip(a1[36:], first))
    keystream_b = bytes(x ^ y for x, y in zip(b[36:], second))
    assert keystream_a != keystream_b, "two chunks must not share a keystream (nonce reuse)"


def test_wrapped_key_opens_for_its_device_with_either_certificate_key_during_a_renewal():
    old, new = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    doc = wrapped("cam-1", new, old)
    for key in (old, new):
        assert bundle_crypto.open_content_key(doc, device_id="cam-1", bundle_digest=BUNDLE, private_key=key) == KEY
    p384 = ec.generate_private_key(ec.SECP384R1())
    assert bundle_crypto.open_content_key(wrapped("cam-1", p384), device_id="cam-1", bundle_digest=BUNDLE,
                                          private_key=p384) == KEY


def test_wrapped_key_of_another_device_is_refused_as_not_for_this_device():
    mine, theirs = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(ContentKeyError) as refused:
        bundle_crypto.open_content_key(wrapped("cam-2", theirs), device_id="cam-1", bundle_digest=BUNDLE,
                                       private_key=mine)
    assert refused.value.code == "content_key_not_for_device"
    with pytest.raises(ContentKeyError) as keyless:
        bundle_crypto.open_content_key(wrapped("cam-1", mine), device_id="cam-1", bundle_digest=BUNDLE,
                                       private_key=None)
    assert keyless.value.code == "content_key_not_for_device"


def test_wrapped_key_moved_to_another_device_id_or_bundle_does_not_open():
    key = ec.generate_private_key(ec.SECP256R1())
    doc = wrapped("cam-1", key)
    for device_id, bundle in (("cam-2", BUNDLE), ("cam-1", OTHER_BUNDLE)):
        with pytest.raises(ContentKeyError) as refused:
            bundle_crypto.open_content_key(doc, device_id=device_id, bundle_digest=bundle, private_key=key)
        assert refused.value.code == "content_key_refused"


@pytest.mark.parametrize("part", ["ct", "epk"])
def test_tampered_wrapped_key_is_refused(part):
    key = ec.generate_private_key(ec.SECP256R1())
    doc = wrapped("cam-1", key)
    raw = bytearray.fromhex(doc["wraps"][0][part])
    raw[-1] ^= 1
    doc["wraps"][0][part] = raw.hex()
    with pytest.raises(ContentKeyError) as refused:
        bundle_crypto.open_content_key(doc, device_id="cam-1", bundle_digest=BUNDLE, private_key=key)
    assert refused.value.code == "content_key_refused" and "does not open" in str(refused.value)


@pytest.mark.parametrize("doc", [None, [], {"alg": "rot13"}, {"alg": "plain", "key": "zz"},
                                 {"alg": "plain", "key": "00" * 16}, {"alg": bundle_crypto.WRAP_ALG, "wraps": []},
                                 {"alg": bundle_crypto.WRAP_ALG, "wraps": ["x"]}])
def test_malformed_content_key_is_refused_with_its_field_named(doc):
    with pytest.raises(ContentKeyError) as refused:
        bundle_crypto.open_content_key(doc, device_id="cam-1", bundle_digest=BUNDLE,
                                       private_key=ec.generate_private_key(ec.SECP256R1()))
    assert refused.value.code == "content_key_refused" and "content key of bundle aaaaaaaaaaaa" in str(refused.value)


def test_a_device_key_that_cannot_be_read_is_reported_as_such_not_as_a_crash(tmp_path):
    manifest = BundleManifest("linear", 1, "onnx", "model.onnx", (), "2026-01-01T00:00:00Z")
    fetcher = Fetcher(link=None, device_id="cam-1", staging_dir=tmp_path, key_file=tmp_path / "missing.key")
    doc = wrapped("cam-1", ec.generate_private_key(ec.SECP256R1()), bundle=manifest.digest)
    with pytest.raises(EdgefleetError) as refused:
        fetcher.open_key(manifest, doc)
    assert refused.value.code == "device_key_unreadable" and "missing.key" in str(refused.value)
    assert fetcher.open_key(manifest, None) is None  # no content key sent: plaintext chunks, nothing to open
