"""Content-addressed bytes (model files, bundle chunks) behind one interface, and its local-directory backend.

:class:`BlobStore` is what the server uses: ``put`` (returns the SHA-256,
storing the same bytes twice is a no-op), ``get``, ``open`` (a streaming
reader for large files), ``exists``, ``size``, ``delete`` and ``file``: a local
file holding the bytes, for code that must load by path (onnxruntime in
:mod:`fleet_server.cloud_scoring`). A missing digest raises
:class:`BlobNotFound` (a ``FileNotFoundError``).

Backends:

- :class:`LocalBlobs` (the default): ``<dir>/<sha256>``, written once to a
  temporary file in the same folder, fsynced, renamed into place, so a crash
  never leaves a partial file under a digest. The folder may be a shared
  mount (``--blob-dir``); ``file`` is the blob's own path.
- :class:`fleet_server.store.blob_rows.DatabaseBlobs`: rows in the shared
  database, so replicas need no shared filesystem; ``file`` copies the bytes
  into a per-replica cache folder, checked against the digest on the way.

Model files and chunks are two stores (``blobs``, ``chunks``): a small model
file is also a chunk with the same digest, and deleting the model must not
delete the chunk. Nothing here knows what the bytes mean.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from fleet_protocol.fields import HEX64

COPY_BUFFER_BYTES = 1024 * 1024


class BlobNotFound(FileNotFoundError):
    """No blob is stored under this digest."""


def check_digest(sha256: str) -> str:
    if not isinstance(sha256, str) or not HEX64.fullmatch(sha256):
        raise ValueError(f"not a SHA-256 digest: {sha256!r}")
    return sha256


def digest_of(data: bytes, sha256: str | None) -> str:
    """The digest of ``data``; ``ValueError`` when it is not the ``sha256`` the caller said it was."""
    digest = hashlib.sha256(data).hexdigest()
    if sha256 is not None and sha256 != digest:
        raise ValueError("data does not match the digest given for it")
    return digest


class BlobStore(ABC):
    """Bytes by their SHA-256: written once, read many times, by any replica that shares the backend."""

    @abstractmethod
    def put(self, data: bytes, sha256: str | None = None) -> str:
        """Store ``data``; return its digest. Storing the same bytes twice (even at once, from two replicas) is a
        no-op. ``sha256``, when given, must be the digest of ``data``."""

    @abstractmethod
    def open(self, sha256: str) -> BinaryIO:
        """A binary reader of the stored bytes (read in pieces: a large model is never all in memory)."""

    @abstractmethod
    def size(self, sha256: str) -> int | None:
        """The stored size in bytes, None when missing."""

    @abstractmethod
    def delete(self, sha256: str) -> None:
        """Forget the bytes (no error when missing)."""

    @abstractmethod
    def file(self, sha256: str) -> Path:
        """A local file holding exactly the bytes of ``sha256`` (do not write to it)."""

    def get(self, sha256: str) -> bytes:
        """The stored bytes; :class:`BlobNotFound` when missing."""
        with self.open(sha256) as reader:
            return reader.read()

    def exists(self, sha256: str) -> bool:
        return self.size(sha256) is not None

    def iter_bytes(self, sha256: str, piece_bytes: int = COPY_BUFFER_BYTES) -> Iterable[bytes]:
        """The bytes in pieces (e.g. for a streamed HTTP response); opens before the first piece is asked for."""
        reader = self.open(sha256)

        def pieces() -> Iterable[bytes]:
            with reader:
                while piece := reader.read(piece_bytes):
                    yield piece

        return pieces()


class LocalBlobs(BlobStore):
    """``<root>/<sha256>`` files (today's layout of ``data_dir/blobs`` and ``data_dir/chunks``)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"LocalBlobs({self.root})"

    def _path(self, sha256: str) -> Path:
        return self.root / check_digest(sha256)

    def put(self, data: bytes, sha256: str | None = None) -> str:
        digest = digest_of(data, sha256)
        target = self._path(digest)
        if target.is_file() and target.stat().st_size == len(data):
            return digest
        write_file_atomic(self.root, target, [data])
        return digest

    def open(self, sha256: str) -> BinaryIO:
        try:
            return open(self._path(sha256), "rb")
        except FileNotFoundError:
            raise BlobNotFound(f"no blob {sha256} in {self.root}") from None

    def size(self, sha256: str) -> int | None:
        try:
            return self._path(sha256).stat().st_size
        except FileNotFoundError:
            return None

    def delete(self, sha256: str) -> None:
        self._path(sha256).unlink(missing_ok=True)

    def file(self, sha256: str) -> Path:
        path = self._path(sha256)
        if not path.is_file():
            raise BlobNotFound(f"no blob {sha256} in {self.root}")
        return path


def write_file_atomic(folder: Path, target: Path, pieces: Iterable[bytes], *, sha256: str | None = None) -> None:
    """Write ``pieces`` to ``target`` through a fsynced temporary file in ``folder`` and one rename. With
    ``sha256``, the bytes written must hash to it (else ``ValueError`` and nothing is left behind)."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    try:
        hasher = hashlib.sha256()
        with os.fdopen(fd, "wb") as handle:
            for piece in pieces:
                hasher.update(piece)
                handle.write(piece)
            handle.flush()
            os.fsync(handle.fileno())
        if sha256 is not None and hasher.hexdigest() != sha256:
            raise ValueError(f"the bytes stored under {sha256} hash to {hasher.hexdigest()}")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
