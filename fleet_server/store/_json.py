"""JSON columns: written sorted and compact, read back to Python values, and looked into by SQL on both engines.

The columns are text on both engines (portable, and the bytes a device's
signed record had stay as they were). Two SQL constructs read into them,
each compiled per engine here and nowhere else: :func:`has_pair` (a tag
filter: SQLite ``json_each``, PostgreSQL ``jsonb ->>``) and :func:`field_text`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from sqlalchemy import Boolean, Text, bindparam
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement

_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, separators=(",", ":"))


def loads(text: str | None, default: Any = None) -> Any:
    return default if text is None else json.loads(text)


class _HasPair(ColumnElement):
    """True when the JSON object in ``column`` maps ``key`` to the string ``value``."""
    type = Boolean()
    inherit_cache = False

    def __init__(self, column, key: str, value: str):
        self.column, self.key, self.value = column, bindparam(None, key, Text), bindparam(None, value, Text)


@compiles(_HasPair, "sqlite")
def _has_pair_sqlite(element, compiler, **kw):
    column, key, value = (compiler.process(x, **kw) for x in (element.column, element.key, element.value))
    return f"EXISTS (SELECT 1 FROM json_each({column}) AS j WHERE j.key = {key} AND j.value = {value})"


@compiles(_HasPair, "postgresql")
def _has_pair_postgresql(element, compiler, **kw):
    column, key, value = (compiler.process(x, **kw) for x in (element.column, element.key, element.value))
    return f"(CAST({column} AS JSONB) ->> {key}) = {value}"


def has_pair(column, key: str, value: str) -> ColumnElement:
    """WHERE clause: the JSON object column maps ``key`` to ``value`` (one tag of a selector)."""
    return _HasPair(column, key, value)


def tag_filter(column, tags: dict[str, str]) -> list[ColumnElement]:
    """WHERE clauses requiring every ``key=value`` of ``tags`` in a JSON object column."""
    return [has_pair(column, key, value) for key, value in tags.items()]


class _FieldText(ColumnElement):
    """The top-level field ``name`` of the JSON object in ``column``, as text."""
    type = Text()
    inherit_cache = False

    def __init__(self, column, name: str):
        if not _FIELD_NAME.fullmatch(name):
            raise ValueError(f"not a plain JSON field name: {name!r}")
        self.column, self.name = column, name


@compiles(_FieldText, "sqlite")
def _field_text_sqlite(element, compiler, **kw):
    return f"json_extract({compiler.process(element.column, **kw)}, '$.{element.name}')"


@compiles(_FieldText, "postgresql")
def _field_text_postgresql(element, compiler, **kw):
    return f"(CAST({compiler.process(element.column, **kw)} AS JSONB) ->> '{element.name}')"


def field_text(column, name: str) -> ColumnElement:
    """The text of one top-level field of a JSON object column (``name``: a plain identifier)."""
    return _FieldText(column, name)
