"""Bundle chunks over HTTP(S) from the base URLs a signed desired state names, resuming a partial chunk with Range.

:meth:`HttpContent.fetch_chunk` asks each base URL in order for
``<base>/content/<bundle digest>/<chunk id>`` (see
:mod:`fleet_server.api.routes.content`) through one pooled connection set per
origin (:class:`~edge_agent.http_pool.HttpPool`), and hands each payload that
comes to ``accept`` (the fetcher: decrypt, check the digest, store), which
says whether it was good. A cache is never trusted: a payload ``accept``
refuses makes it ask the next URL. A base URL that does not answer (refused,
reset, timed out, a 5xx, a 404) is skipped for the rest of this object's
life (:meth:`reset` forgets that, at each new fetch); when none is left,
:class:`NoContentUrl` tells the fetcher to get the rest over MQTT.

A body that breaks off is kept in ``part`` (``<chunks dir>/.<id>.part``); the
next request for it sends ``Range: bytes=<kept>-`` and appends a 206 answer
(a 200 replaces it: a server without ranges). ``bytes_received`` counts the
body bytes that arrived (the data use of a fetch). It does not decrypt or
verify anything itself, and it does not run requests in parallel.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from fleet_protocol.errors import TransportError

from .http_pool import ConnectionFailed, HttpPool

log = logging.getLogger("edgefleet.agent.content")
MAX_CHUNK_PAYLOAD_BYTES = 64 * 1024**2 + 1024  # a chunk is at most the upload cap; its header and tag on top


class NoContentUrl(TransportError):
    """No base URL answered: the caller falls back to MQTT."""

    def __init__(self, message: str):
        super().__init__(message, code="content_unreachable")


class HttpContent:
    def __init__(self, *, timeout_s: float = 10.0, ssl_context: ssl.SSLContext | None = None):
        self.timeout_s = timeout_s
        self._ssl = ssl_context
        self._pools: dict[tuple[str, str, int | None], HttpPool] = {}
        self._down: set[str] = set()
        self.bytes_received = 0

    def reset(self) -> None:
        """Try every base URL again (a new fetch: the cache or server may be back)."""
        self._down.clear()

    def fetch_chunk(self, base_urls: tuple[str, ...], bundle_digest: str, chunk_id: str, part: Path,
                    accept: Callable[[bytes], bool]) -> bool:
        """Offer ``accept`` this chunk's payload from each base URL in turn until it takes one (True); False when
        every URL that answered sent bytes it refused; :class:`NoContentUrl` when none answered at all."""
        answered = False
        for base in base_urls:
            if base in self._down:
                continue
            try:
                payload = self._get(base, f"/content/{bundle_digest}/{chunk_id}", part)
            except TransportError as exc:
                log.info("content URL %s did not answer (%s); trying the next", base, exc)
                self._down.add(base)
                continue
            answered = True
            if accept(payload):
                return True
        if not answered:
            raise NoContentUrl(f"none of the content URLs answered: {', '.join(base_urls)}")
        return False

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()

    def _pool(self, base: str) -> tuple[HttpPool, str]:
        parts = urlsplit(base)
        origin = (parts.scheme, parts.hostname or "", parts.port)
        pool = self._pools.get(origin)
        if pool is None:
            context = (self._ssl or ssl.create_default_context()) if parts.scheme == "https" else None
            pool = self._pools[origin] = HttpPool(origin[1], origin[2], ssl_context=context, timeout_s=self.timeout_s,
                                                  max_response_bytes=MAX_CHUNK_PAYLOAD_BYTES)
        return pool, parts.path.rstrip("/")

    def _get(self, base: str, path: str, part: Path) -> bytes:
        """The whole payload from ``base``, resuming from ``part``; TransportError when it cannot be had there."""
        pool, prefix = self._pool(base)
        kept = part.read_bytes() if part.exists() else b""
        headers = {"Range": f"bytes={len(kept)}-"} if kept else {}
        try:
            response = pool.request("GET", prefix + path, None, headers, idempotent=True)
        except ConnectionFailed as exc:
            self.bytes_received += len(exc.partial)
            if exc.partial and exc.status in (200, 206):
                start = len(kept) if exc.status == 206 and _resumes(exc.headers, len(kept)) else 0
                part.write_bytes(kept[:start] + exc.partial)
            raise TransportError(str(exc), code="content_unreachable") from None
        self.bytes_received += len(response.body)
        if response.status == 416 and kept:  # the kept part is not a prefix of this chunk: start over
            part.unlink(missing_ok=True)
            return self._get(base, path, part)
        if response.status == 206 and kept and _resumes(response.headers, len(kept)):
            part.unlink(missing_ok=True)
            return kept + response.body
        if response.status == 200:
            part.unlink(missing_ok=True)
            return response.body
        raise TransportError(f"GET {base}{path} answered {response.status}", code="content_unreachable")


def _resumes(headers: dict[str, str], start: int) -> bool:
    """Whether a 206's Content-Range starts where the kept part ends."""
    return headers.get("content-range", "").startswith(f"bytes {start}-")
