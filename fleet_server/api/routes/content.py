"""``GET /content/{bundle}/{chunk_id}`` (and HEAD), no token: one encrypted bundle chunk, immutable and cacheable.

The bytes are what :class:`fleet_server.content.BundleContent` returns: the
same from every replica, forever, for the same URL. So the response says so:
``Cache-Control: public, max-age=31536000, immutable`` and a strong ``ETag``
(the chunk id, quoted), ``If-None-Match`` answered with 304, and one
``Range`` (``bytes=a-b``, ``bytes=a-``, ``bytes=-n``) with 206 and
``Content-Range`` (416 when it starts past the end), so a device resumes a
partial chunk and a cache fills from a partial request. Several ranges in one
header are answered with the whole chunk (allowed by RFC 9110).

No token, on purpose (see docs/content-cache.md): the payload is AES-256-GCM
under a per-bundle key that only devices the bundle is assigned to receive,
wrapped for their own certificate keys inside their signed desired state, and
the URL names a keyed chunk id nobody without that key can compute. A cache
keyed on the URL alone then serves the whole fleet from one copy. Integrity
is never the server's or the cache's word: devices check every chunk's digest.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Header, Path, Response

from ..deps import ContentDep

router = APIRouter(prefix="/content", tags=["content"])
CACHE_CONTROL = "public, max-age=31536000, immutable"
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_HEX64 = "^[0-9a-f]{64}$"


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(first, last)`` inclusive for a single satisfiable ``Range``; None: serve the whole body;
    ValueError: the range starts past the end (416)."""
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None or match.groups() == ("", ""):
        return None  # several ranges, another unit, or junk: the whole body is a valid answer
    first, last = match.groups()
    if first == "":  # the last n bytes
        if int(last) == 0:
            raise ValueError("an empty suffix range")
        return max(0, size - int(last)), size - 1
    start = int(first)
    end = size - 1 if last == "" else min(int(last), size - 1)
    if start >= size or start > end:
        raise ValueError(f"range starts at {start}, the chunk has {size} bytes")
    return start, end


@router.api_route("/{bundle}/{chunk_id}", methods=["GET", "HEAD"], response_class=Response,
                  responses={200: {"content": {"application/octet-stream": {}}}, 206: {"description": "a byte range"},
                             304: {"description": "not modified (If-None-Match)"},
                             404: {"description": "no such bundle or chunk"},
                             416: {"description": "the range starts past the end"}})
def get_chunk(content: ContentDep, bundle: Annotated[str, Path(pattern=_HEX64)],
              chunk_id: Annotated[str, Path(pattern=_HEX64)], range_: Annotated[str | None, Header(alias="range")] = None,
              if_none_match: Annotated[str | None, Header()] = None) -> Response:
    """One encrypted chunk of a bundle, by its keyed id (as the device's desired state lets it compute)."""
    etag = f'"{chunk_id}"'
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL, "Accept-Ranges": "bytes"}
    if if_none_match is not None and (if_none_match.strip() == "*"
                                      or etag in (t.strip().removeprefix("W/") for t in if_none_match.split(","))):
        content.chunk(bundle, chunk_id)  # 304 only for a chunk that exists
        return Response(status_code=304, headers=headers)
    payload = content.chunk(bundle, chunk_id)
    try:
        span = byte_range(range_, len(payload))
    except ValueError:
        return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{len(payload)}"})
    if span is None:
        return Response(payload, media_type="application/octet-stream", headers=headers)
    first, last = span
    return Response(payload[first:last + 1], status_code=206, media_type="application/octet-stream",
                    headers={**headers, "Content-Range": f"bytes {first}-{last}/{len(payload)}"})
