"""The server's secrets at first start: the Ed25519 signing key and the admin API token.

The signing key lives in ``data_dir/keys/signing.pem`` (folder 0700, file
0600) and never leaves the server; only its public half is served. The admin
token is random (or ``EDGEFLEET_ADMIN_TOKEN`` at first start) and stored only
as a SHA-256 hash: its plaintext exists once, in the return value of
:func:`ensure_admin_token`, for the runner to print.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path

from fleet_protocol.signing import SigningKey
from fleet_protocol.timestamps import to_iso, utc_now

from .store import Database
from .store import tokens as token_store
from .tokens import ADMIN as ADMIN_ROLE

log = logging.getLogger(__name__)
ADMIN_TOKEN_ENV = "EDGEFLEET_ADMIN_TOKEN"


def signing_key_path(data_dir: Path) -> Path:
    return Path(data_dir) / "keys" / "signing.pem"


def load_or_create_signing_key(data_dir: Path) -> tuple[SigningKey, bool]:
    """The server's signing key and whether it was created now."""
    path = signing_key_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            log.warning("signing key %s is readable by others (mode %o); setting it to 0600", path, mode)
            os.chmod(path, 0o600)
        return SigningKey.from_pem(path.read_bytes()), False
    key = SigningKey.generate()
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key.to_pem())
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return key, True


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
