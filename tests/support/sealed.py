"""Opening bundle chunks as a device does: the content key from its desired module, then each sealed chunk."""

from __future__ import annotations

from collections.abc import Iterable

from cryptography.hazmat.primitives.asymmetric import ec

from fleet_protocol import bundle_crypto


def open_chunks(payloads: Iterable[bytes], content_key: dict, *, device_id: str, bundle_digest: str,
                private_key: ec.EllipticCurvePrivateKey | None = None) -> dict[str, bytes]:
    """``{sha256: plaintext}`` of chunk payloads from a bundle's topic (raises if any does not open)."""
    key = bundle_crypto.open_content_key(content_key, device_id=device_id, bundle_digest=bundle_digest,
                                         private_key=private_key)
    return {sha: bundle_crypto.decrypt_chunk(key, bundle_digest, sha, sealed)
            for sha, sealed in map(bundle_crypto.split_chunk, payloads)}
