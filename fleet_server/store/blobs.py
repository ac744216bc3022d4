"""Content-addressed files: ``<dir>/<sha256>``, written once, atomically.

Model files live in ``data_dir/blobs/`` and bundle chunks in
``data_dir/chunks/`` (shared by every bundle that holds the same bytes).
A write goes to a temporary file in the same folder, is fsynced, then
renamed into place, so a crash never leaves a partial file under a digest.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from fleet_protocol.fields import HEX64


class BlobStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        if not HEX64.fullmatch(sha256):
            raise ValueError(f"not a SHA-256 digest: {sha256!r}")
        return self.root / sha256

    def put(self, data: bytes, sha256: str | None = None) -> str:
        """Store ``data``; return its digest. Storing the same bytes twice is a no-op."""
        digest = hashlib.sha256(data).hexdigest()
        if sha256 is not None and sha256 != digest:
            raise ValueError("data does not match the digest given for it")
        target = self.path(digest)
        if target.is_file() and target.stat().st_size == len(data):
            return digest
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest

    def get(self, sha256: str) -> bytes:
        """The stored bytes; raises ``FileNotFoundError`` when missing."""
        return self.path(sha256).read_bytes()

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def delete(self, sha256: str) -> None:
        self.path(sha256).unlink(missing_ok=True)
