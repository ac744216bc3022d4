"""The server's secrets at first start: the root and signing keys, the root documents, the admin API token.

Private keys never leave the server; only public halves are served.
:class:`KeyRing` holds the root of trust (:mod:`fleet_protocol.root`): root
key(s) sign root documents only, the signing key signs bundles and desired
state. Root version 1 is created at first start (also for a data dir from
before roots, around its existing signing key); every root is kept so a
device that was offline through several rotations can walk the chain.
:meth:`KeyRing.rotate` makes a new signing key and root N+1 listing only it,
signed by the root keys (a threshold of the current root keys, which are also
the new root's).

Where the material lives is a :class:`KeyStorage`:

- :class:`KeyFiles` (the SQLite default): ``data_dir/keys`` (folder 0700, key
  files 0600): ``root-<n>.pem``, ``signing.pem``, ``roots/<version>.json``.
  A rotation is ordered so that a crash leaves either the old state or one a
  restart finishes: the new key goes to ``signing.next.pem``, then the root is
  written, then the key file replaces ``signing.pem``.
- :class:`fleet_server.shared_secrets.SharedKeyStorage` (``--database-url``):
  one sealed row in the shared database that every replica reads; a rotation
  replaces it in one transaction, and the others see it at their next use.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Protocol

from fleet_protocol.errors import EdgefleetError
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


@dataclass(frozen=True)
class KeyMaterial:
    """One consistent state of the root of trust: root keys, the current signing key, every root (v1 first)."""

    root_keys: tuple[SigningKey, ...]
    signing_key: SigningKey
    roots: tuple[dict, ...]

    def __repr__(self) -> str:  # keep the keys out of logs and tracebacks
        return f"KeyMaterial(root version {self.version}, signing key {self.signing_key.public_key.keyid[:12]})"

    @property
    def version(self) -> int:
        return self.roots[-1]["signed"]["version"]


RootSigner = Callable[[int, Sequence[SigningKey], SigningKey, "dict | None"], dict]


class KeyStorage(Protocol):
    """Where a :class:`KeyRing` keeps its material: :class:`KeyFiles` (a data dir) or
    :class:`fleet_server.shared_secrets.SharedKeyStorage` (the shared database, sealed)."""

    where: str  # where the signing key lives, for the start-up banner

    def load_or_create(self, sign_root: RootSigner) -> tuple[KeyMaterial, bool]:
        """The stored material, made at first start (True: the signing key was created now)."""

    def current(self, held: KeyMaterial) -> KeyMaterial:
        """The material now: ``held`` unless another server rotated since."""

    def save_rotation(self, old: KeyMaterial, new: KeyMaterial) -> None:
        """Replace ``old`` by ``new`` (one root more); :class:`RotationConflict` when ``old`` is no longer current."""


class RotationConflict(EdgefleetError):
    """Another server rotated the signing key at the same moment; the rotation asked for here was not made."""

    code = "rotation_conflict"
    category = "conflict"


class KeyRing:
    """The root keys, the chain of signed root documents and the current signing key, in a :class:`KeyStorage`."""

    def __init__(self, storage: KeyStorage, *, root_valid_days: int = 365):
        self._storage = storage
        self._valid = timedelta(days=root_valid_days)
        self._lock = threading.Lock()
        self._material, self.signing_key_created = storage.load_or_create(self._sign_root)
        if self.signing_key.public_key.to_hex() not in self.root["signed"]["signing_keys"]:
            log.error("signing key in %s is not listed by root version %d: devices will refuse what it signs",
                      storage.where, self.version)

    @property
    def where(self) -> str:
        return self._storage.where

    def _now(self) -> KeyMaterial:
        with self._lock:
            self._material = self._storage.current(self._material)
            return self._material

    @property
    def signing_key(self) -> SigningKey:
        """The key bundles and desired state are signed with now (a rotation by another server included)."""
        return self._now().signing_key

    @property
    def root(self) -> dict:
        """The current signed root envelope (what devices enroll with)."""
        return self._now().roots[-1]

    @property
    def roots(self) -> list[dict]:
        """Every signed root, version 1 first."""
        return list(self._now().roots)

    @property
    def version(self) -> int:
        return self._now().version

    def rotate(self) -> dict:
        """Make a new signing key and the root that lists only it; return that root. The old key is gone."""
        with self._lock:
            old = self._storage.current(self._material)
            key = new_signing_key()
            envelope = self._sign_root(old.version + 1, old.root_keys, key, old.roots[-1])
            current = TrustedRoot(RootDocument.from_dict(old.roots[-1]["signed"]))
            current.update(envelope, utc_now())  # exactly the checks a device makes
            new = KeyMaterial(old.root_keys, key, old.roots + (envelope,))
            self._storage.save_rotation(old, new)
            self._material = new
            log.info("signing key rotated: root version %d, signing key %s", new.version, key.public_key.keyid[:12])
            return envelope

    def _sign_root(self, version: int, root_keys: Sequence[SigningKey], signing_key: SigningKey,
                   previous: dict | None) -> dict:
        threshold = RootDocument.from_dict(previous["signed"]).root_threshold if previous else 1
        return sign_root(make_root(version=version, expires=utc_now() + self._valid,
                                   root_keys=[k.public_key for k in root_keys], root_threshold=threshold,
                                   signing_keys=[signing_key.public_key]), list(root_keys))


def signing_key_path(data_dir: Path) -> Path:
    return Path(data_dir) / "keys" / "signing.pem"


class KeyFiles:
    """The key ring in ``data_dir/keys``: ``root-<n>.pem``, ``signing.pem``, ``roots/<version>.json``.

    One server owns the folder, so :meth:`current` never reloads. A rotation
    writes the new key to ``signing.next.pem``, then the root, then renames the
    key over ``signing.pem``; a restart finishes or drops a half-done one.
    """

    def __init__(self, data_dir: Path):
        self._dir = Path(data_dir) / "keys"
        self._roots_dir = self._dir / "roots"
        self._signing = signing_key_path(data_dir)
        self.where = f"{self._signing} (private, mode 0600)"

    def load_or_create(self, sign_root: RootSigner) -> tuple[KeyMaterial, bool]:
        self._dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self._dir, 0o700)
        created = not self._signing.exists()
        if created:
            write_atomic(self._signing, new_signing_key().to_pem(), mode=0o600)
        signing_key = _read_key(self._signing)
        root_keys = tuple(self._load_or_create_root_keys())
        self._roots_dir.mkdir(exist_ok=True)
        roots = [json.loads(path.read_text()) for path in
                 sorted(self._roots_dir.glob("*.json"), key=lambda p: int(p.stem))]
        if not roots:  # first start, or a data dir from before roots: root 1 around its signing key
            roots.append(sign_root(1, root_keys, signing_key, None))
            self._save_root(roots[-1])
        signing_key = self._finish_interrupted_rotation(roots[-1]) or signing_key
        return KeyMaterial(root_keys, signing_key, tuple(roots)), created

    def current(self, held: KeyMaterial) -> KeyMaterial:
        return held

    def save_rotation(self, old: KeyMaterial, new: KeyMaterial) -> None:
        write_atomic(self._next_path, new.signing_key.to_pem(), mode=0o600)
        self._save_root(new.roots[-1])
        os.replace(self._next_path, self._signing)

    @property
    def _next_path(self) -> Path:
        return self._dir / "signing.next.pem"

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

    def _finish_interrupted_rotation(self, root: dict) -> SigningKey | None:
        """A crash mid-rotation: keep (and return) the new key if its root was written, else drop it."""
        if not self._next_path.exists():
            return None
        if _read_key(self._next_path).public_key.to_hex() in root["signed"]["signing_keys"]:
            os.replace(self._next_path, self._signing)
            return _read_key(self._signing)
        self._next_path.unlink()
        return None


def _read_key(path: Path) -> SigningKey:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("key %s is readable by others (mode %o); setting it to 0600", path, mode)
        os.chmod(path, 0o600)
    return SigningKey.from_pem(path.read_bytes())


def ensure_admin_token(db: Database) -> str | None:
    """Create the admin token if the data dir has none; return its plaintext only when created now."""
    if token_store.count_tokens(db=db, role=ADMIN_ROLE):
        if os.environ.get(ADMIN_TOKEN_ENV) and not token_store.token_role(db=db, token=os.environ[ADMIN_TOKEN_ENV]):
            log.warning("%s is set but this data dir already has a different admin token; the variable is "
                        "ignored (it only applies at the first start)", ADMIN_TOKEN_ENV)
        return None
    token = os.environ.get(ADMIN_TOKEN_ENV) or secrets.token_urlsafe(32)
    if not token_store.add_token(db=db, token=token, name="admin", role=ADMIN_ROLE, created=to_iso(utc_now())):
        return None  # another replica starting at the same moment made it first: its token is the one
    return token
