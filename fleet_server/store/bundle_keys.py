"""Each bundle's content key: the AES-256 key its chunks are encrypted with on the shared chunk topic.

Kept in the server's database beside the signing keys' data dir (the file's
mode protects both); never logged, never in an API model.
"""

from __future__ import annotations

from .db import Database


def get_or_add(*, db: Database, digest: str, new_key: bytes, created: str) -> bytes:
    """The bundle's key; ``new_key`` becomes it when it has none yet (one caller wins)."""
    with db.transaction() as tx:
        tx.execute("INSERT OR IGNORE INTO bundle_keys (digest, key, created) VALUES (?, ?, ?)",
                   [digest, new_key.hex(), created])
        (key,) = tx.execute("SELECT key FROM bundle_keys WHERE digest = ?", [digest]).fetchone()
    return bytes.fromhex(key)
