"""The secret key and the sealing of server secrets (AES-256-GCM): what opens, and what is refused and how."""

from __future__ import annotations

import base64
import os

import pytest

from fleet_server.secret_box import (SECRET_KEY_ENV, SecretBox, SecretKeyError, TamperedSecretError,
                                     WrongSecretKeyError, load_secret_key)

KEY = os.urandom(32)
SECRET = b"-----BEGIN PRIVATE KEY----- root key -----END PRIVATE KEY-----"


def test_a_sealed_secret_opens_under_its_name_and_key_and_hides_its_bytes():
    box = SecretBox(KEY)
    sealed = box.seal("keyring", SECRET)
    assert SECRET not in sealed and b"PRIVATE KEY" not in sealed
    assert box.open("keyring", sealed, key_id=box.key_id) == SECRET
    assert box.seal("keyring", SECRET) != sealed  # a fresh nonce every time


def test_a_wrong_secret_key_is_refused_by_name_never_opened_to_garbage():
    sealed, right = SecretBox(KEY).seal("keyring", SECRET), SecretBox(KEY)
    other = SecretBox(os.urandom(32))
    with pytest.raises(WrongSecretKeyError, match="sealed with another secret key") as refused:
        other.open("keyring", sealed, key_id=right.key_id)
    assert refused.value.code == "secret_key_wrong" and KEY.hex() not in str(refused.value)
    with pytest.raises(TamperedSecretError):  # a key id copied from the row does not help a wrong key either
        other.open("keyring", sealed, key_id=other.key_id)


@pytest.mark.parametrize("change", ["flip a ciphertext bit", "flip a nonce bit", "truncate", "move to another name"])
def test_a_tampered_sealed_secret_is_detected(change):
    box = SecretBox(KEY)
    sealed, name = bytearray(box.seal("ca", SECRET)), "ca"
    if change == "flip a ciphertext bit":
        sealed[20] ^= 0x01
    elif change == "flip a nonce bit":
        sealed[0] ^= 0x80
    elif change == "truncate":
        del sealed[-1]
    else:
        name = "keyring"
    with pytest.raises(TamperedSecretError, match="were altered"):
        box.open(name, bytes(sealed), key_id=box.key_id)


def test_the_secret_key_comes_from_the_file_or_the_environment_as_base64_of_32_bytes(tmp_path):
    text = base64.b64encode(KEY).decode()
    assert load_secret_key(environ={SECRET_KEY_ENV: text}) == KEY
    key_file = tmp_path / "secret.key"
    key_file.write_text(text + "\n")
    assert load_secret_key(environ={SECRET_KEY_ENV: base64.b64encode(os.urandom(32)).decode()},
                           key_file=key_file) == KEY  # the file named on the command line wins
    assert load_secret_key(environ={}) is None


@pytest.mark.parametrize("text, reason", [("not base64 at all!", "is not base64"),
                                          (base64.b64encode(bytes(range(16))).decode(), "holds 16 bytes, not 32")],
                         ids=["not-base64", "16-bytes"])  # fixed values: xdist workers must collect the same ids
def test_a_malformed_secret_key_is_refused_with_how_to_make_one(text, reason):
    with pytest.raises(SecretKeyError, match=reason) as refused:
        load_secret_key(environ={SECRET_KEY_ENV: text})
    assert "head -c 32 /dev/urandom | base64" in str(refused.value)


def test_an_unreadable_secret_key_file_is_refused_by_name(tmp_path):
    with pytest.raises(SecretKeyError, match="cannot read the secret key file .*missing.key"):
        load_secret_key(environ={}, key_file=tmp_path / "missing.key")
