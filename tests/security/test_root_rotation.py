"""Root of trust: threshold-signed root documents, key rotation, rollback and expiry (TUF rules)."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet_protocol import bundle_file
from fleet_protocol.errors import BadDataError, ExpiredError, RollbackError, SignatureError
from fleet_protocol.messages import DesiredModule
from fleet_protocol.root import RootDocument, TrustedRoot, make_root, sign_root
from fleet_protocol.signing import SigningKey, sign_envelope
from fleet_protocol.timestamps import to_iso
from fleet_protocol.trust import TrustedState
from fleet_server.keys import new_signing_key

NOW = datetime(2030, 6, 1, tzinfo=timezone.utc)
YEAR = timedelta(days=365)


class Keys:
    """Three root keys (threshold 2) and a bundle signing key, as the server would hold them."""

    def __init__(self) -> None:
        self.roots = [new_signing_key() for _ in range(3)]
        self.signing = new_signing_key()

    def root(self, version: int, *, expires: datetime = NOW + YEAR, threshold: int = 2) -> dict:
        return make_root(version=version, expires=expires, root_keys=[k.public_key for k in self.roots],
                         root_threshold=threshold, signing_keys=[self.signing.public_key])


def enrolled(keys: Keys) -> TrustedRoot:
    return TrustedRoot.from_envelope(sign_root(keys.root(1), keys.roots[:2]))


def rotation(old: Keys, new: Keys, version: int = 2, **root) -> dict:
    """Root ``version`` naming ``new``'s keys, signed by two old and two new root keys."""
    return sign_root(new.root(version, **root), old.roots[:2] + new.roots[:2])


def signed_module(key: SigningKey) -> DesiredModule:
    files = {"model.onnx": b"\x08\x01" * 64, "main.py": b"def run(x):\n    return x\n"}
    manifest = bundle_file.build_manifest(module="iris", version=1, runtime="onnx", model="model.onnx",
                                          files=files, created=to_iso(NOW), entry="main.py")
    return DesiredModule(manifest.module, manifest.version, manifest.digest, sign_envelope(manifest.to_dict(), key))


def test_new_signing_key_signed_by_threshold_of_root_keys_is_accepted():
    old = Keys()
    new_signing = new_signing_key()
    root = make_root(version=2, expires=NOW + YEAR, root_keys=[k.public_key for k in old.roots], root_threshold=2,
                     signing_keys=[new_signing.public_key])
    trusted = enrolled(old).update(sign_root(root, old.roots[1:]), NOW)
    assert trusted.version == 2
    assert [k.keyid for k in trusted.signing_keys()] == [new_signing.public_key.keyid]
    manifest = TrustedState("dev-1", trusted.signing_keys()).verify_module(signed_module(new_signing),
                                                                           installed=None, now=NOW)
    assert manifest.module == "iris"


def test_root_update_signed_by_too_few_root_keys_is_refused():
    old = Keys()
    with pytest.raises(SignatureError, match="1 valid signature"):
        enrolled(old).update(sign_root(old.root(2), old.roots[:1]), NOW)


def test_root_update_signed_by_too_few_new_root_keys_is_refused():
    old, new = Keys(), Keys()
    with pytest.raises(SignatureError, match="its own root keys"):
        enrolled(old).update(sign_root(new.root(2), old.roots[:2] + new.roots[:1]), NOW)


def test_root_update_signed_only_by_new_root_keys_is_refused():
    old, new = Keys(), Keys()
    with pytest.raises(SignatureError, match="current root keys"):
        enrolled(old).update(sign_root(new.root(2), new.roots), NOW)


def test_bundle_signed_by_rotated_out_key_is_refused():
    old, new = Keys(), Keys()
    trusted = enrolled(old).update(rotation(old, new), NOW)
    trust = TrustedState("dev-1", trusted.signing_keys())
    with pytest.raises(SignatureError, match="untrusted key"):
        trust.verify_module(signed_module(old.signing), installed=None, now=NOW)
    assert trust.verify_module(signed_module(new.signing), installed=None, now=NOW).version == 1


def test_older_root_version_is_refused():
    old, new = Keys(), Keys()
    trusted = enrolled(old).update(rotation(old, new), NOW)
    with pytest.raises(RollbackError):
        trusted.update(rotation(new, new, version=1), NOW)
    with pytest.raises(RollbackError):
        trusted.update(rotation(new, new, version=2), NOW)


def test_expired_root_is_refused():
    old, new = Keys(), Keys()
    with pytest.raises(ExpiredError):
        enrolled(old).update(rotation(old, new, expires=NOW - timedelta(seconds=1)), NOW)


def test_root_skipping_a_version_is_refused():
    old, new = Keys(), Keys()
    with pytest.raises(BadDataError, match="skips") as refused:
        enrolled(old).update(rotation(old, new, version=3), NOW)
    assert refused.value.code == "root_version_gap"


def test_device_offline_through_several_rotations_catches_up_through_expired_intermediate_roots():
    first, second, third = Keys(), Keys(), Keys()
    chain = [rotation(first, second, expires=NOW - YEAR), rotation(second, third, version=3)]
    trusted = enrolled(first).update_chain(chain, NOW)
    assert (trusted.version, trusted.signing_keys()[0].keyid) == (3, third.signing.public_key.keyid)


def test_chain_ending_in_an_expired_root_is_refused():
    first, second = Keys(), Keys()
    with pytest.raises(ExpiredError):
        enrolled(first).update_chain([rotation(first, second, expires=NOW - YEAR)], NOW)


def test_initial_root_not_signed_by_its_own_threshold_is_refused():
    keys = Keys()
    with pytest.raises(SignatureError):
        TrustedRoot.from_envelope(sign_root(keys.root(1), keys.roots[:1]))


def test_duplicate_signatures_by_one_key_count_once():
    old = Keys()
    envelope = sign_root(old.root(2), [old.roots[0], old.roots[0]])
    with pytest.raises(SignatureError):
        enrolled(old).update(envelope, NOW)


@pytest.mark.parametrize("change", [
    {"root_threshold": 4}, {"root_threshold": 0}, {"root_keys": []}, {"signing_keys": ["abcd"]},
    {"version": 0}, {"expires": "soon"}, {"type": "desired-state"},
])
def test_malformed_root_document_is_refused(change):
    doc = {**Keys().root(1), **change}
    with pytest.raises(BadDataError):
        RootDocument.from_dict(doc)


def test_root_listing_one_key_twice_is_refused():
    doc = Keys().root(1)
    doc["root_keys"] = [doc["root_keys"][0], doc["root_keys"][0].upper()]
    with pytest.raises(BadDataError, match="twice"):
        RootDocument.from_dict(doc)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20)
ROOT_FIELDS = ("type", "version", "expires", "root_keys", "root_threshold", "signing_keys")


@settings(max_examples=300, deadline=None)
@given(garbage=json_values)
def test_root_parser_refuses_garbage_with_bad_data_error_only(garbage):
    with pytest.raises(BadDataError):
        TrustedRoot.from_envelope(garbage)
    with pytest.raises(BadDataError):
        TrustedRoot.from_envelope({"signed": garbage, "signatures": []})


_GARBAGE_KEYS = Keys()
_VALID_ENVELOPE = sign_root(_GARBAGE_KEYS.root(2), _GARBAGE_KEYS.roots)
_TRUSTED = TrustedRoot.from_envelope(sign_root(_GARBAGE_KEYS.root(1), _GARBAGE_KEYS.roots))


@settings(max_examples=300, deadline=None)
@given(where=st.sampled_from(("signed",) + tuple(f"signed.{f}" for f in ROOT_FIELDS) + ("signatures", "sig")),
       value=json_values)
def test_root_update_with_a_garbled_field_fails_with_bad_data_error_only(where, value):
    envelope = copy.deepcopy(_VALID_ENVELOPE)
    if where == "sig":
        envelope["signatures"][0]["sig"] = value
    elif where.startswith("signed."):
        envelope["signed"][where.split(".", 1)[1]] = value
    else:
        envelope[where] = value
    try:
        _TRUSTED.update(envelope, NOW)
    except BadDataError:
        return
    assert envelope == _VALID_ENVELOPE, "a garbled root was accepted"
