"""Canonical JSON: the one byte form that is hashed and signed.

Keys sorted, no insignificant whitespace, UTF-8. Floats are refused so that
two implementations can never disagree on how a number is written.

:func:`parse_json_object` is the one entry point for untrusted JSON on both
sides: it bounds size and nesting depth *before* ``json.loads`` runs (whose
recursion cannot be bounded otherwise: 300,000 nested brackets raise
``RecursionError``), and refuses anything but UTF-8 text holding an object.
:func:`check_json_bounds` is its first step alone, for JSON another library
parses (the server's REST request bodies).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from .errors import BadDataError, MessageError

MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays and objects any edgefleet JSON document may have (a desired state needs ~10)."""
_NOT_QUOTE_OR_BRACKET = bytes(c for c in range(256) if c not in b'"[]{}')


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


def parse_json_object(payload: bytes | str, *, what: str, max_bytes: int, max_depth: int = MAX_JSON_DEPTH,
                      error: type[BadDataError] = MessageError) -> dict:
    """Decode untrusted UTF-8 JSON into a dict, or raise ``error`` (a :class:`MessageError` by default).

    Size and nesting depth are checked on the raw bytes before the JSON parser sees them.
    """
    if isinstance(payload, str):
        try:
            payload = payload.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise error(f"{what} is not valid text: {exc}") from None
    check_json_bounds(payload, what=what, max_bytes=max_bytes, max_depth=max_depth, error=error)
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{what} is not UTF-8 JSON: {exc}") from None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise error(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise error(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def check_json_bounds(payload: bytes, *, what: str, max_bytes: int, max_depth: int = MAX_JSON_DEPTH,
                      error: type[BadDataError] = MessageError) -> None:
    """Raise ``error`` when ``payload`` is over ``max_bytes`` or nests deeper than ``max_depth``; parses nothing.

    :func:`parse_json_object` starts with it; a caller whose JSON parser is someone else's (FastAPI's request
    bodies) runs it on the raw bytes first, so both refuse with the same reason.
    """
    if len(payload) > max_bytes:
        raise error(f"{what} is {len(payload)} bytes, more than the {max_bytes} allowed")
    if payload.count(b"[") + payload.count(b"{") > max_depth and (depth := json_depth(payload)) > max_depth:
        raise error(f"{what} nests arrays and objects {depth} deep, more than the {max_depth} allowed")


def json_depth(data: bytes) -> int:
    """How deep arrays and objects nest in UTF-8 JSON ``data``, not counting brackets inside strings.

    Linear time, no recursion. Escaped backslashes, then escaped quotes are dropped, so every quote left
    opens or closes a string, and everything but quotes and brackets is dropped. A bracket with an even
    number of quotes before it is outside strings; a running sum of those opening (+1) and closing (-1)
    gives the depth at every point. Up to the first error in text that is not valid JSON (where the JSON
    parser stops) this is exactly the nesting the parser would recurse into.
    """
    skeleton = data.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_QUOTE_OR_BRACKET)
    codes = np.frombuffer(skeleton, dtype=np.uint8)
    outside_strings = (np.cumsum(codes == 0x22) & 1) == 0  # "
    steps = ((codes == 0x5B) | (codes == 0x7B)).astype(np.int32)  # [ {
    steps -= (codes == 0x5D) | (codes == 0x7D)  # ] }
    return int(np.cumsum(steps * outside_strings).max(initial=0))
