"""Canonical JSON: the one byte form that is hashed and signed.

Keys sorted, no insignificant whitespace, UTF-8. Floats are refused so that
two implementations can never disagree on how a number is written.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .errors import MessageError


_LEAVES = frozenset((str, int, bool, type(None)))  # exact types that need no look inside


def _reject_floats(value: Any) -> None:
    """Raise on a float anywhere in ``value`` (dict values and list/tuple items, recursively).

    On the hot path of every message and outbox record: exact-type checks first, so the common
    leaves (str, int, bool, None) cost one set lookup; subclasses take the ``isinstance`` path.
    """
    kind = type(value)
    if kind is dict:
        value = value.values()
    elif kind is not list and kind is not tuple:
        if isinstance(value, float):
            raise MessageError("floats are not allowed in signed documents")
        if isinstance(value, dict):
            value = value.values()
        elif not isinstance(value, (list, tuple)):
            return
    for item in value:
        if type(item) not in _LEAVES:
            _reject_floats(item)


def canonical_text(value: Any) -> str:
    """Serialise ``value`` to canonical JSON text (what :func:`canonical_json` encodes to UTF-8)."""
    _reject_floats(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_json(value: Any) -> bytes:
    """Serialise ``value`` to canonical JSON bytes."""
    return canonical_text(value).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parse_json_object(payload: bytes | str, *, what: str, max_bytes: int) -> dict:
    """Decode untrusted JSON bytes into a dict, or raise :class:`MessageError`."""
    if len(payload) > max_bytes:
        raise MessageError(f"{what} is {len(payload)} bytes, more than the {max_bytes} allowed")
    try:
        value = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MessageError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise MessageError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value
