"""Small typed accessors for validating untrusted dicts, raising one error type.

Every schema in this package reads its input through these, so a malformed
document always fails with a message that names the offending field. Every
integer read through :func:`field` lies within ``±MAX_INT`` (the largest
integer every JSON reader, JavaScript included, holds exactly, and far inside
SQLite's 64 bits), so no schema can pass a number that overflows downstream.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, Iterable

from .errors import BadDataError, MessageError

MAX_INT = 2**53 - 1
# Match these with ``fullmatch`` only: ``$`` (and ``match``) would also accept a trailing newline or a suffix.
HEX64 = re.compile(r"[0-9a-f]{64}")
NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


def field(
    doc: dict,
    key: str,
    kind: type | tuple[type, ...],
    *,
    where: str,
    optional: bool = False,
    default: Any = None,
    error: type[BadDataError] = MessageError,
) -> Any:
    """Return ``doc[key]`` checked against ``kind``; bools are never ints."""
    if key not in doc or doc[key] is None:
        if optional:
            return default
        raise error(f"{where}: missing field '{key}'")
    value = doc[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise error(f"{where}: field '{key}' must be {_names(kinds)}, got bool")
    if not isinstance(value, kinds):
        raise error(f"{where}: field '{key}' must be {_names(kinds)}, got {type(value).__name__}")
    if isinstance(value, int) and not isinstance(value, bool) and not -MAX_INT <= value <= MAX_INT:
        shown = value if abs(value) < 10**20 else f"a {len(str(abs(value)))}-digit number"
        raise error(f"{where}: field '{key}' must be an integer between -{MAX_INT} and {MAX_INT}, got {shown}")
    return value


def name_field(doc: dict, key: str, *, where: str, error: type[BadDataError] = MessageError) -> str:
    """A lowercase identifier safe in MQTT topics and file names."""
    value = field(doc, key, str, where=where, error=error)
    if not NAME.fullmatch(value):
        raise error(f"{where}: field '{key}' must match {NAME.pattern}, got {value!r}")
    return value


def name_list_field(doc: dict, key: str, *, where: str, error: type[BadDataError] = MessageError) -> list[str]:
    """An optional list of names (e.g. firmware profiles), each matched whole as :func:`name_field` does."""
    values = field(doc, key, list, where=where, optional=True, default=[], error=error)
    for value in values:
        if not isinstance(value, str) or not NAME.fullmatch(value):
            raise error(f"{where}: each of '{key}' must match {NAME.pattern}, got {value!r}")
    return values


def digest_field(doc: dict, key: str, *, where: str, error: type[BadDataError] = MessageError) -> str:
    value = field(doc, key, str, where=where, error=error)
    if not HEX64.fullmatch(value):
        raise error(f"{where}: field '{key}' must be a lowercase hex SHA-256")
    return value


def count_field(doc: dict, key: str, *, where: str, minimum: int = 0, optional: bool = False,
                default: int | None = None, error: type[BadDataError] = MessageError) -> int:
    value = field(doc, key, int, where=where, optional=optional, default=default, error=error)
    if value is not None and value < minimum:
        raise error(f"{where}: field '{key}' must be >= {minimum}, got {value}")
    return value


def did_you_mean(name: str, known: Iterable[str], *, cutoff: float = 0.6) -> str:
    """``"did you mean 'x'? "`` for the known name nearest to ``name``, or ``""`` when none is near."""
    nearest = difflib.get_close_matches(name, list(known), n=1, cutoff=cutoff)
    return f"did you mean {nearest[0]!r}? " if nearest else ""


def refuse_unknown_keys(doc: dict, known: Iterable[str], *, where: str,
                        error: type[BadDataError] = MessageError) -> None:
    """Raise ``error`` naming the first unknown key of ``doc`` and the nearest known one.

    One rule for every document a person writes (module.json, module config, agent.toml,
    firmware profiles): a typo is refused, never silently ignored.
    """
    known = sorted(known)
    unknown = sorted(key for key in doc if key not in known)
    if not unknown:
        return
    key = unknown[0]
    hint = did_you_mean(str(key), known)
    raise error(f"{where}: unknown field {key!r} ({hint}known fields: {', '.join(known)})")


def is_ascii_decimal(text: str) -> bool:
    """True for a non-empty string of ASCII digits only: ``'²'.isdigit()`` is True, yet ``int('²')`` fails."""
    return text.isascii() and text.isdigit()


def is_valid_name(value: str) -> bool:
    return bool(NAME.fullmatch(value))


def _names(kinds: tuple[type, ...]) -> str:
    return " or ".join(k.__name__ for k in kinds)
