"""UTC timestamps as ISO 8601 strings ending in 'Z', the only form on the wire.

Conversions only: this package never reads the clock. The agent and the server
each have a ``clock`` module and pass ``now`` in.
"""

from __future__ import annotations

from datetime import datetime, timezone

from .errors import MessageError


def to_iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def from_iso(value: str, *, what: str = "timestamp") -> datetime:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        raise MessageError(f"{what} {value!r} is not an ISO 8601 timestamp") from None
    if moment.tzinfo is None:
        raise MessageError(f"{what} {value!r} has no time zone")
    return moment
