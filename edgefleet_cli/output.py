"""Printing for the CLI: JSON for scripts, rich tables for people.

rich is imported at the first table, console or error, not with this module: `edgefleet agent run` imports
:func:`print_json` and :func:`parse_tags` from here and runs for months without printing a table. The consoles
read the terminal's width (COLUMNS, else the terminal) at each print, not once when they are made: the commands
hold them from import, and a process's COLUMNS can change after that (an xdist worker, CliRunner's env).
"""

from __future__ import annotations

import functools
import json
import sys
from typing import Any, Iterable, Sequence


@functools.cache
def _consoles() -> dict:
    from rich.console import Console

    consoles = {"console": Console(), "err_console": Console(stderr=True)}
    for console in consoles.values():
        console.width = None  # Console() fixed COLUMNS as its width; without one, rich reads it at each print
    return consoles


def __getattr__(name: str):  # ``console`` and ``err_console``, made at first use
    if name in ("console", "err_console"):
        return _consoles()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def print_error(message: str) -> None:
    """``error: message`` as exactly one line on stderr: no wrapping at any width, no markup read from it."""
    from rich.text import Text

    text = Text("error:", style="red")
    text.append(" " + " ".join(message.split()))
    _consoles()["err_console"].print(text, soft_wrap=True, highlight=False)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    _consoles()["console"].print(table)


def print_fields(title: str, fields: dict[str, Any]) -> None:
    console = _consoles()["console"]
    console.print(f"[bold]{title}[/bold]")
    width = max((len(k) for k in fields), default=0)
    for key, value in fields.items():
        if isinstance(value, (dict, list)):
            value = json.dumps(value, sort_keys=True)
        console.print(f"  {key.ljust(width)}  {value}", highlight=False, markup=False)


def format_tags(tags: dict | None) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((tags or {}).items()))


def parse_tags(values: Sequence[str] | None) -> dict[str, str]:
    """``["site=berlin", "tier=a,b=c"]`` → ``{"site": "berlin", "tier": "a", "b": "c"}``."""
    from .errors import CliError

    tags: dict[str, str] = {}
    for value in values or ():
        for pair in filter(None, value.split(",")):
            key, sep, val = pair.partition("=")
            if not sep or not key.strip():
                raise CliError(f"tag {pair!r} is not of the form key=value", exit_code=2)
            tags[key.strip()] = val.strip()
    return tags
