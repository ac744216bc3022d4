"""Opening bundle chunks as a device does: the content key from its desired module, then each sealed chunk."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from cryptography.hazmat.primitives.asymmetric import ec

from fleet_protocol import bundle_crypto


def open_chunks(payloads: Iterable[bytes], content_key: dict, *, device_id: str, bundle_digest: str,
                private_key: ec.EllipticCurvePrivateKey | None = None) -> dict[str, bytes]:
    """``{sha256: plaintext}`` of chunk payloads from a bundle's topic (raises if any does not open, or is
    published under an id that is not its digest's)."""
    key = bundle_crypto.open_content_key(content_key, device_id=device_id, bundle_digest=bundle_digest,
                                         private_key=private_key)
    opened = {}
    for cid, sealed in map(bundle_crypto.split_chunk, payloads):
        data = bundle_crypto.decrypt_chunk(key, bundle_digest, cid, sealed)
        sha = hashlib.sha256(data).hexdigest()
        assert bundle_crypto.chunk_id(key, sha) == cid, f"chunk {sha[:12]} published under another chunk's id"
        opened[sha] = data
    return opened
