"""The database backend of :class:`~fleet_server.store.blobs.BlobStore`: blobs as rows, so replicas share no disk.

A blob is one ``blob_objects`` row (store, digest, size, piece count) and its
bytes split into ``blob_pieces`` of :data:`PIECE_BYTES` (1 MiB: small enough
for one statement, large enough that a 500 MB model is 500 rows). A put
writes the pieces and then the object row in one transaction with
insert-if-absent, so two replicas storing the same bytes at once store them
once and both succeed (on PostgreSQL the second waits for the first's
uncommitted rows, then skips them); a reader sees a blob only once its
object row is committed, that is whole. Rows are never updated.

``get`` and ``file`` check the bytes against the digest (the database is not
trusted to have kept them); ``open`` streams piece by piece without the
check. ``file`` copies a blob into this replica's cache folder (one file per
digest, written atomically after the check), for callers that load by path.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import delete, select

from fleet_protocol.timestamps import to_iso

from ..clock import utc_now
from .blobs import BlobNotFound, BlobStore, check_digest, digest_of, write_file_atomic
from .db import Database
from .schema import blob_objects, blob_pieces

PIECE_BYTES = 1024 * 1024


class DatabaseBlobs(BlobStore):
    """Blobs of one named store (``blobs``: model files, ``chunks``: bundle chunks) in the shared database."""

    def __init__(self, db: Database, store: str, *, cache_dir: Path, piece_bytes: int = PIECE_BYTES):
        self._db = db
        self.store = store
        self.cache_dir = Path(cache_dir)
        self._piece_bytes = piece_bytes

    def __repr__(self) -> str:
        return f"DatabaseBlobs({self.store!r} in {self._db.display_url})"

    def _object(self, sha256: str):
        return (blob_objects.c.store == self.store) & (blob_objects.c.sha256 == check_digest(sha256))

    def _pieces(self, sha256: str):
        return (blob_pieces.c.store == self.store) & (blob_pieces.c.sha256 == check_digest(sha256))

    def put(self, data: bytes, sha256: str | None = None) -> str:
        digest = digest_of(data, sha256)
        if self.size(digest) == len(data):
            return digest
        step = self._piece_bytes
        pieces = [{"store": self.store, "sha256": digest, "seq": seq, "data": data[offset:offset + step]}
                  for seq, offset in enumerate(range(0, len(data), step))]
        with self._db.transaction() as conn:
            if pieces:
                conn.execute(self._db.insert_ignoring(blob_pieces), pieces)
            conn.execute(self._db.insert_ignoring(blob_objects).values(
                store=self.store, sha256=digest, size=len(data), pieces=len(pieces), created=to_iso(utc_now())))
        return digest

    def size(self, sha256: str) -> int | None:
        return self._db.scalar(select(blob_objects.c.size).where(self._object(sha256)))

    def _piece_count(self, sha256: str) -> int:
        count = self._db.scalar(select(blob_objects.c.pieces).where(self._object(sha256)))
        if count is None:
            raise BlobNotFound(f"no blob {sha256} in the database's {self.store!r} store")
        return count

    def get(self, sha256: str) -> bytes:
        count = self._piece_count(sha256)
        with self._db.read() as conn:
            rows = conn.execute(select(blob_pieces.c.seq, blob_pieces.c.data).where(self._pieces(sha256))
                                .order_by(blob_pieces.c.seq)).all()
        if [seq for seq, _ in rows] != list(range(count)):
            raise BlobNotFound(f"blob {sha256} in the database's {self.store!r} store lacks pieces")
        data = b"".join(bytes(piece) for _, piece in rows)
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ValueError(f"the bytes stored under {sha256} in the {self.store!r} store were altered")
        return data

    def open(self, sha256: str) -> BinaryIO:
        count = self._piece_count(sha256)
        return io.BufferedReader(_PieceReader(self._read_piece, sha256, count), buffer_size=self._piece_bytes)

    def _read_piece(self, sha256: str, seq: int) -> bytes:
        piece = self._db.scalar(select(blob_pieces.c.data).where(self._pieces(sha256) & (blob_pieces.c.seq == seq)))
        if piece is None:
            raise BlobNotFound(f"piece {seq} of blob {sha256} is missing from the database's {self.store!r} store")
        return bytes(piece)

    def delete(self, sha256: str) -> None:
        with self._db.transaction() as conn:
            conn.execute(delete(blob_objects).where(self._object(sha256)))
            conn.execute(delete(blob_pieces).where(self._pieces(sha256)))
        (self.cache_dir / sha256).unlink(missing_ok=True)

    def file(self, sha256: str) -> Path:
        target = self.cache_dir / check_digest(sha256)
        size = self.size(sha256)
        if size is None:
            raise BlobNotFound(f"no blob {sha256} in the database's {self.store!r} store")
        if target.is_file() and target.stat().st_size == size:
            return target  # written here only after its digest checked out
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        count = self._piece_count(sha256)
        write_file_atomic(self.cache_dir, target, (self._read_piece(sha256, seq) for seq in range(count)),
                          sha256=sha256)
        return target


class _PieceReader(io.RawIOBase):
    """A blob's pieces as one raw stream, fetched one piece at a time."""

    def __init__(self, read_piece, sha256: str, count: int):
        self._read_piece, self._sha256, self._count = read_piece, sha256, count
        self._seq, self._pending = 0, b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending and self._seq < self._count:
            self._pending = self._read_piece(self._sha256, self._seq)
            self._seq += 1
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size
