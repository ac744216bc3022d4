"""Spans of time as people type them (``30m``, ``6h``, ``7d``): to seconds, and back from now to a timestamp.

Used by the API's ``since`` parameters and the server's retention settings;
no I/O besides reading the clock for "back from now".
"""

from __future__ import annotations

import re
from datetime import timedelta

from fleet_protocol.errors import BadDataError
from fleet_protocol.timestamps import from_iso, to_iso

from .clock import utc_now

_SPAN = re.compile(r"([0-9]{1,6})([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def span_s(text: str) -> int | None:
    """Seconds in ``30s``, ``30m``, ``6h`` or ``7d``; None when ``text`` is no span."""
    match = _SPAN.fullmatch(text.strip())
    return int(match[1]) * _UNIT_S[match[2]] if match else None


def parse_since(since: str | None) -> str | None:
    """``2026-12-03T10:00:00Z`` or a span back from now (``30m``, ``6h``, ``7d``) to a timestamp."""
    if since is None:
        return None
    seconds = span_s(since)
    if seconds is not None:
        try:
            return to_iso(utc_now() - timedelta(seconds=seconds))
        except OverflowError:  # 999999d reaches back before year 1
            raise BadDataError(f"since {since!r} reaches back before year 1") from None
    try:
        return to_iso(from_iso(since))
    except BadDataError:
        raise BadDataError(f"since {since!r} is neither a time (2026-12-03T10:00:00Z) nor a span back from now "
                           "(30m, 6h, 7d)") from None
