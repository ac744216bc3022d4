"""Each bundle's content key: the AES-256 key its chunks are encrypted with on the shared chunk topic.

Kept in the server's database beside the signing keys' data dir (the file's
mode protects both); never logged, never in an API model.
"""

from __future__ import annotations

from sqlalchemy import select

from .db import Database
from .schema import bundle_keys


def get_or_add(*, db: Database, digest: str, new_key: bytes, created: str) -> bytes:
    """The bundle's key; ``new_key`` becomes it when it has none yet (one caller wins)."""
    with db.transaction() as conn:
        conn.execute(db.insert_ignoring(bundle_keys).values(digest=digest, key=new_key.hex(), created=created))
        key = conn.execute(select(bundle_keys.c.key).where(bundle_keys.c.digest == digest)).scalar_one()
    return bytes.fromhex(key)
