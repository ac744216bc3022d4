"""Storage: the database's tables (one module per table; SQLite or PostgreSQL) and content-addressed files.

Every function here is keyword-only and takes the :class:`Database`; callers
never write SQL (the tables: :mod:`.schema`; connections and
migrations: :mod:`.db`, :mod:`.migrate`). Values go in and come out as plain dicts with JSON columns
already decoded. Nothing here publishes, signs or decides policy.
"""

from .blobs import BlobNotFound, BlobStore, LocalBlobs
from .db import Database

__all__ = ["BlobNotFound", "BlobStore", "Database", "LocalBlobs"]
