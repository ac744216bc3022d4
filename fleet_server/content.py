"""A bundle's encrypted chunks by id, as ``GET /content/<bundle digest>/<chunk id>`` serves them to devices and caches.

:meth:`BundleContent.chunk` returns exactly the payload the chunk sender
publishes on MQTT (:func:`fleet_protocol.bundle_crypto.encrypt_chunk`:
header, keyed chunk id, AES-256-GCM ciphertext). That encryption is
deterministic for a given bundle key (its nonce is derived from the chunk id),
and the bundle key is made once and kept in the database, so every replica
serves the same bytes for the same URL: a cache in front of several replicas
holds one copy, and a strong ETag (the chunk id) is honest.

Why the URL names the *keyed* chunk id and not the chunk's plaintext SHA-256:
anyone may ask a cache for a URL, and a plaintext digest would let someone
without the bundle key confirm that a bundle contains a chunk they already
know (a public base model's layer). The chunk id is an HMAC under the bundle
key, so URLs can be neither guessed nor matched against known plaintext; a
device computes them from the content key in its signed desired state.

This module only maps ids to chunks and encrypts; the HTTP details (ETag,
``Range``, ``Cache-Control``) live in :mod:`.api.routes.content`. It keeps
the id map of the last :data:`MAX_BUNDLES_MAPPED` bundles asked for.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from fleet_protocol import bundle_crypto
from fleet_protocol.manifest import BundleManifest

from .content_keys import ContentKeys
from .errors import NotFoundError
from .store import BlobStore, Database
from .store import bundles as bundle_store

MAX_BUNDLES_MAPPED = 64


class BundleContent:
    def __init__(self, *, db: Database, chunks: BlobStore, content_keys: ContentKeys):
        self._db = db
        self._chunks = chunks
        self._content_keys = content_keys
        self._ids: OrderedDict[str, dict[bytes, str]] = OrderedDict()  # bundle digest -> chunk id -> plaintext sha
        self._lock = threading.Lock()

    def chunk(self, bundle_digest: str, chunk_id: str) -> bytes:
        """The encrypted chunk payload; :class:`NotFoundError` for an unknown bundle or an id not in it."""
        try:
            cid = bytes.fromhex(chunk_id)
        except ValueError:
            raise NotFoundError(f"no chunk {chunk_id!r} (a chunk id is 64 hex digits)") from None
        ids = self._chunk_ids(bundle_digest)
        sha = ids.get(cid)
        if sha is None:
            raise NotFoundError(f"bundle {bundle_digest[:12]} has no chunk with id {chunk_id[:12]}")
        key = self._content_keys.bundle_key(bundle_digest)
        try:
            data = self._chunks.get(sha)
        except FileNotFoundError:
            raise NotFoundError(f"chunk {sha[:12]} of bundle {bundle_digest[:12]} is missing from the chunk "
                                "store") from None
        return bundle_crypto.encrypt_chunk(key, bundle_digest, data)

    def _chunk_ids(self, bundle_digest: str) -> dict[bytes, str]:
        with self._lock:
            ids = self._ids.get(bundle_digest)
            if ids is not None:
                self._ids.move_to_end(bundle_digest)
                return ids
        bundle = bundle_store.get_bundle(db=self._db, digest=bundle_digest)
        if bundle is None:
            raise NotFoundError(f"no bundle {bundle_digest[:12]}")
        manifest = BundleManifest.from_dict(bundle["envelope"]["signed"])
        key = self._content_keys.bundle_key(bundle_digest)
        ids = {bundle_crypto.chunk_id(key, sha): sha for sha in manifest.chunk_sizes()}
        with self._lock:
            self._ids[bundle_digest] = ids
            while len(self._ids) > MAX_BUNDLES_MAPPED:
                self._ids.popitem(last=False)
        return ids
