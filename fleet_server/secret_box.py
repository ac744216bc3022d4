"""Sealing the server's secrets for the shared database: AES-256-GCM under one key the operator holds.

The key is 32 random bytes, base64, from ``EDGEFLEET_SECRET_KEY`` or a file
(``--secret-key-file``, the same base64 text); :func:`load_secret_key` reads it
and refuses anything else with a clear error. Make one with
``head -c 32 /dev/urandom | base64``.

:class:`SecretBox` seals ``(name, plaintext)`` into ``nonce || ciphertext+tag``
with the name as associated data, so a sealed value moved to another name does
not open. :attr:`SecretBox.key_id` (a keyed hash of the key, never the key)
is stored beside each sealed value, so opening tells two failures apart:

    SecretKeyError (EdgefleetError)
    ├── a key that is not 32 bytes of base64, or none where one is needed  code secret_key_invalid / _missing
    ├── WrongSecretKeyError    the value was sealed under another key           code secret_key_wrong
    └── TamperedSecretError    same key, but the bytes or the name were altered code secret_tampered

A wrong key never yields garbage: GCM's tag check fails first. No I/O here
besides reading the key file; the rows live in :mod:`.store.secrets`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fleet_protocol.errors import EdgefleetError

SECRET_KEY_ENV = "EDGEFLEET_SECRET_KEY"
KEY_BYTES = 32
NONCE_BYTES = 12  # random per seal: at most a few thousand seals per key, far below GCM's 2**32 limit


class SecretKeyError(EdgefleetError):
    """The server's secret key is missing or malformed, or does not open what the database holds."""

    code = "secret_key_invalid"
    category = "configuration"


class WrongSecretKeyError(SecretKeyError):
    code = "secret_key_wrong"


class TamperedSecretError(SecretKeyError):
    code = "secret_tampered"


def parse_secret_key(text: str, *, source: str) -> bytes:
    """32 bytes from their base64 text (surrounding whitespace ignored); ``source`` names where it came from."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SecretKeyError(f"{source} is not base64 text; make a key with `head -c 32 /dev/urandom | base64`") \
            from None
    if len(key) != KEY_BYTES:
        raise SecretKeyError(f"{source} holds {len(key)} bytes, not {KEY_BYTES}; make a key with "
                             "`head -c 32 /dev/urandom | base64`")
    return key


def load_secret_key(*, environ: Mapping[str, str] = os.environ, key_file: Path | None = None) -> bytes | None:
    """The key from ``key_file`` when given, else from ``EDGEFLEET_SECRET_KEY``; None when neither is set."""
    if key_file is not None:
        try:
            text = Path(key_file).read_text("ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise SecretKeyError(f"cannot read the secret key file {key_file}: "
                                 f"{getattr(exc, 'strerror', None) or exc}") from None
        return parse_secret_key(text, source=f"the secret key file {key_file}")
    text = environ.get(SECRET_KEY_ENV)
    if not text:
        return None
    return parse_secret_key(text, source=SECRET_KEY_ENV)


class SecretBox:
    """Seals and opens named secrets under one AES-256-GCM key."""

    def __init__(self, key: bytes):
        if len(key) != KEY_BYTES:
            raise SecretKeyError(f"a secret key is {KEY_BYTES} bytes, got {len(key)}")
        self._aead = AESGCM(key)
        self.key_id = hmac.new(key, b"edgefleet secret key id", hashlib.sha256).hexdigest()[:16]

    def __repr__(self) -> str:  # keep the key out of logs and tracebacks
        return f"SecretBox(key_id={self.key_id})"

    def seal(self, name: str, plaintext: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, name.encode("utf-8"))

    def open(self, name: str, sealed: bytes, *, key_id: str) -> bytes:
        """The plaintext of ``sealed`` stored as ``name`` under ``key_id``; raises rather than return garbage."""
        if not hmac.compare_digest(key_id, self.key_id):
            raise WrongSecretKeyError(
                f"the database's {name!r} was sealed with another secret key (key id {key_id}, this server's is "
                f"{self.key_id}): start every replica with the same {SECRET_KEY_ENV} or --secret-key-file")
        try:
            return self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], name.encode("utf-8"))
        except InvalidTag:
            raise TamperedSecretError(f"the database's {name!r} does not open with this server's secret key although "
                                      "its key id matches: the stored bytes were altered") from None
