"""Content-defined chunking: chunk boundaries chosen by the bytes themselves, not by offsets.

A boundary falls after byte ``i`` when a gear-style hash of the 32 bytes
ending at ``i`` has its top bits zero, so an edit moves only the boundaries
near it: a new version of a model that changes a few bytes (or inserts
some) shares every other chunk with the old one, and a device that holds
the old one fetches only the changed chunks. Chunks are at least
``max_size // 16`` bytes, about ``max_size // 4`` on average and never over
``max_size`` (so manifests keep their ``chunk_size`` meaning). Pure and
deterministic (a fixed gear table); vectorised with numpy, in blocks.
"""

from __future__ import annotations

import numpy as np

from .canonical import sha256_hex
from .manifest import ChunkRef

WINDOW_BYTES = 32
_BLOCK_BYTES = 4 * 1024 * 1024
_GEAR = np.random.default_rng(0x5EED).integers(0, 2**63, size=256, dtype=np.uint64) * np.uint64(2) + np.uint64(1)


def _candidates(data: bytes, mask: int) -> np.ndarray:
    """Offsets just after every byte where the window hash says "boundary" (ascending)."""
    out = []
    arr = np.frombuffer(data, dtype=np.uint8)
    shift_top = np.uint64(40)
    for start in range(0, len(arr), _BLOCK_BYTES):
        lo = max(0, start - WINDOW_BYTES + 1)
        block = _GEAR[arr[lo:start + _BLOCK_BYTES]]
        h = block.copy()
        for j in range(1, WINDOW_BYTES):
            h[j:] += block[:-j] << np.uint64(j)
        hits = np.nonzero(((h >> shift_top) & np.uint64(mask)) == 0)[0] + lo
        out.append(hits[hits >= start + WINDOW_BYTES - 1] + 1 if start == 0 else hits[hits >= start] + 1)
    return np.concatenate(out) if out else np.empty(0, dtype=np.int64)


def content_defined_chunks(data: bytes, max_size: int) -> tuple[ChunkRef, ...]:
    """Split ``data`` at content-defined boundaries; every chunk is 1 to ``max_size`` bytes."""
    if len(data) <= max_size // 16 or max_size < 64:
        return tuple(ChunkRef(sha256_hex(data[i:i + max_size]), len(data[i:i + max_size]))
                     for i in range(0, len(data), max_size))
    min_size, average = max_size // 16, max_size // 4
    mask = (1 << max(1, (average - min_size).bit_length() - 1)) - 1
    cuts, start = [], 0
    for end in _candidates(data, mask).tolist():
        while end - start > max_size:
            start += max_size
            cuts.append(start)
        if end - start >= min_size:
            cuts.append(end)
            start = end
    while len(data) - start > max_size:
        start += max_size
        cuts.append(start)
    if not cuts or cuts[-1] != len(data):
        cuts.append(len(data))
    chunks, start = [], 0
    for end in cuts:
        if end > start:
            piece = data[start:end]
            chunks.append(ChunkRef(sha256_hex(piece), len(piece)))
            start = end
    return tuple(chunks)
