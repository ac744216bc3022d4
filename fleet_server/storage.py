"""Where a server keeps what replicas must share: model files, chunks, the key ring and the CA.

:func:`open_storage` picks the backends from the configuration:

| configuration                | model files and chunks               | key ring and CA                  |
| ---------------------------- | ------------------------------------ | -------------------------------- |
| default (SQLite in data dir) | ``data_dir/blobs``, ``data_dir/chunks`` | ``data_dir/keys``, ``data_dir/ca`` |
| ``--database-url``           | rows in that database                 | sealed rows in that database      |
| ``--blob-dir DIR`` (either)  | ``DIR/blobs``, ``DIR/chunks``         | as above                          |

With ``--database-url`` the blobs default to the database so that replicas
share nothing but it and the broker (no shared filesystem to provision, back
up or fence); ``--blob-dir`` is the alternative for a fleet whose models are
large enough that the database should not hold them. The key ring and the CA
always follow the database there, sealed under the secret key
(``EDGEFLEET_SECRET_KEY`` or ``--secret-key-file``), which must then be set;
bundle content keys (already in the database) are sealed under it too.
Per-replica scratch (``data_dir/blob-cache``: database blobs copied out for
loading by path) stays in each replica's own data dir.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from .ca import CaFiles, CaStorage
from .config import ServerConfig
from .keys import KeyFiles, KeyStorage
from .secret_box import SECRET_KEY_ENV, SecretBox, SecretKeyError, load_secret_key
from .shared_secrets import SealedDocuments, SharedCaStorage, SharedKeyStorage
from .store import BlobStore, Database, LocalBlobs
from .store.blob_rows import DatabaseBlobs


@dataclass(frozen=True)
class Storage:
    blobs: BlobStore  # model files
    chunks: BlobStore  # bundle chunks
    keys: KeyStorage
    ca: CaStorage
    box: SecretBox | None = None  # seals secrets kept in a shared database (bundle content keys too)


def open_storage(config: ServerConfig, db: Database, *, environ: Mapping[str, str] = os.environ) -> Storage:
    """The backends for ``config``; :class:`SecretKeyError` when the database needs a secret key and has none."""
    shared = config.database_url is not None
    if config.blob_dir is not None:
        blobs, chunks = LocalBlobs(config.blob_dir / "blobs"), LocalBlobs(config.blob_dir / "chunks")
    elif shared:
        cache = config.data_dir / "blob-cache"
        blobs, chunks = DatabaseBlobs(db, "blobs", cache_dir=cache), DatabaseBlobs(db, "chunks", cache_dir=cache)
    else:
        blobs, chunks = LocalBlobs(config.data_dir / "blobs"), LocalBlobs(config.data_dir / "chunks")
    if not shared:
        return Storage(blobs, chunks, KeyFiles(config.data_dir), CaFiles(config.data_dir / "ca"))
    key = load_secret_key(environ=environ, key_file=config.secret_key_file)
    if key is None:
        raise SecretKeyError(f"--database-url keeps the signing keys and the CA in the database, sealed: set "
                             f"{SECRET_KEY_ENV} or --secret-key-file FILE to the same key on every replica (make "
                             "one with `head -c 32 /dev/urandom | base64`)", code="secret_key_missing")
    box = SecretBox(key)
    documents = SealedDocuments(db, box)
    return Storage(blobs, chunks, SharedKeyStorage(documents), SharedCaStorage(documents), box)
