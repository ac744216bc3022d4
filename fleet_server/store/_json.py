"""JSON columns: written sorted and compact, read back to Python values."""

from __future__ import annotations

import json
from typing import Any


def dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, separators=(",", ":"))


def loads(text: str | None, default: Any = None) -> Any:
    return default if text is None else json.loads(text)


def tag_filter_sql(column: str, tags: dict[str, str]) -> tuple[list[str], list[str]]:
    """WHERE clauses (and their parameters) requiring every ``key=value`` in a JSON object column."""
    clauses, params = [], []
    for key, value in tags.items():
        clauses.append(f"EXISTS (SELECT 1 FROM json_each({column}) WHERE json_each.key = ? AND json_each.value = ?)")
        params += [key, value]
    return clauses, params
