"""The server's secrets at first start: the root and signing keys, the root documents, the admin API token.

Keys live in ``data_dir/keys`` (folder 0700, key files 0600) and never leave
the server; only public halves are served. :class:`KeyRing` holds the root of
trust (:mod:`fleet_protocol.root`): root key(s) ``root-<n>.pem`` sign root
documents only, the signing key ``signing.pem`` signs bundles and desired
state. Root version 1 is created at first start (also for a data dir from
before roots, around its existing signing key); every root stays in
``keys/roots/<version>.json`` (public) so a device that was offline through
several rotations can walk the chain. :meth:`KeyRing.rotate` makes a new
signing key and root N+1 listing only it, signed by the root keys (a
threshold of the current root keys, which are also the new root's). Its steps
are ordered so that a crash leaves either the old state or one a restart
finishes: the new key goes to ``signing.next.pem``, then the root is written,
then the key file replaces ``signing.pem``.

The admin token is random (or ``EDGEFLEET_ADMIN_TOKEN`` at first start) and
stored only as a SHA-256 hash: its plaintext exists once, in the return value
of :func:`ensure_admin_token`, for the runner to print.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import stat
import threading
from datetime import timedelta
from pathlib import Path

from fleet_protocol.root import RootDocument, TrustedRoot, make_root, sign_root
from fleet_protocol.signing import SigningKey
from fleet_protocol.timestamps import to_iso

from .ca import write_atomic
from .clock import utc_now
from .store import Database
from .store import tokens as token_store
from .tokens import ADMIN as ADMIN_ROLE

log = logging.getLogger(__name__)
ADMIN_TOKEN_ENV = "EDGEFLEET_ADMIN_TOKEN"


def new_signing_key() -> SigningKey:
    """A fresh Ed25519 signing key, its seed from the OS's CSPRNG (``fleet_protocol`` draws no random numbers)."""
    return SigningKey.from_seed(secrets.token_bytes(32))


def signing_key_path(data_dir: Path) -> Path:
    return Path(data_dir) / "keys" / "signing.pem"


def load_or_create_signing_key(data_dir: Path) -> tuple[SigningKey, bool]:
    """The server's signing key and whether it was created now."""
    path = signing_key_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    if path.exists():
        return _read_key(path), False
    key = new_signing_key()
    write_atomic(path, key.to_pem(), mode=0o600)
    return key, True


def _read_key(path: Path) -> SigningKey:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("key %s is readable by others (mode %o); setting it to 0600", path, mode)
        os.chmod(path, 0o600)
    return SigningKey.from_pem(path.read_bytes())


class KeyRing:
    """Root keys, the chain of signed root documents and the current signing key of one data dir."""

    def __init__(self, data_dir: Path, *, root_valid_days: int = 365):
        self._dir = Path(data_dir) / "keys"
        self._roots_dir = self._dir / "roots"
        self._valid = timedelta(days=root_valid_days)
        self._lock = threading.Lock()
        self.signing_key, self.signing_key_created = load_or_create_signing_key(data_dir)
        self._root_keys = self._load_or_create_root_keys()
        self._roots_dir.mkdir(exist_ok=True)
        self._roots = [json.loads(path.read_text()) for path in
                       sorted(self._roots_dir.glob("*.json"), key=lambda p: int(p.stem))]
        if not self._roots:
            self._save_root(sign_root(self._document(1, self.signing_key), self._root_keys))
        self._finish_interrupted_rotation()
        if self.signing_key.public_key.to_hex() not in self.root["signed"]["signing_keys"]:
            log.error("signing key %s is not listed by root version %d: devices will refuse what it signs",
                      signing_key_path(data_dir), self.version)

    @property
    def root(self) -> dict:
        """The current signed root envelope (what devices enroll with)."""
        return self._roots[-1]

    @property
    def roots(self) -> list[dict]:
        """Every signed root, version 1 first."""
        return list(self._roots)

    @property
    def version(self) -> int:
        return self._roots[-1]["signed"]["version"]

    def rotate(self) -> dict:
        """Make a new signing key and the root that lists only it; return that root. The old key is gone."""
        with self._lock:
            key = new_signing_key()
            write_atomic(self._next_path, key.to_pem(), mode=0o600)
            envelope = sign_root(self._document(self.version + 1, key), self._root_keys)
            current = TrustedRoot(RootDocument.from_dict(self.root["signed"]))
            current.update(envelope, utc_now())  # exactly the checks a device makes
            self._save_root(envelope)
            os.replace(self._next_path, signing_key_path(self._dir.parent))
            self.signing_key = key
            log.info("signing key rotated: root version %d, signing key %s", self.version,
                     key.public_key.keyid[:12])
            return envelope

    @property
    def _next_path(self) -> Path:
        return self._dir / "signing.next.pem"

    def _document(self, version: int, signing_key: SigningKey) -> dict:
        threshold = RootDocument.from_dict(self.root["signed"]).root_threshold if self._roots else 1
        return make_root(version=version, expires=utc_now() + self._valid,
                         root_keys=[k.public_key for k in self._root_keys], root_threshold=threshold,
                         signing_keys=[signing_key.public_key])

    def _load_or_create_root_keys(self) -> list[SigningKey]:
        paths = sorted(self._dir.glob("root-*.pem"))
        if paths:
            return [_read_key(path) for path in paths]
        key = new_signing_key()
        write_atomic(self._dir / "root-1.pem", key.to_pem(), mode=0o600)
        return [key]

    def _save_root(self, envelope: dict) -> None:
        version = envelope["signed"]["version"]
        write_atomic(self._roots_dir / f"{version}.json", json.dumps(envelope, indent=1).encode(), mode=0o644)
        self._roots.append(envelope)

    def _finish_interrupted_rotation(self) -> None:
        """A crash mid-:meth:`rotate`: keep the new key if its root was written, else drop it."""
        if not self._next_path.exists():
            return
        listed = self.root["signed"]["signing_keys"]
        if _read_key(self._next_path).public_key.to_hex() in listed:
            os.replace(self._next_path, signing_key_path(self._dir.parent))
            self.signing_key = _read_key(signing_key_path(self._dir.parent))
        else:
            self._next_path.unlink()


def ensure_admin_token(db: Database) -> str | None:
    """Create the admin token if the data dir has none; return its plaintext only when created now."""
    if token_store.count_tokens(db=db, role=ADMIN_ROLE):
        if os.environ.get(ADMIN_TOKEN_ENV) and not token_store.token_role(db=db, token=os.environ[ADMIN_TOKEN_ENV]):
            log.warning("%s is set but this data dir already has a different admin token; the variable is "
                        "ignored (it only applies at the first start)", ADMIN_TOKEN_ENV)
        return None
    token = os.environ.get(ADMIN_TOKEN_ENV) or secrets.token_urlsafe(32)
    token_store.add_token(db=db, token=token, name="admin", role=ADMIN_ROLE, created=to_iso(utc_now()))
    return token
