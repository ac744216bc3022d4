"""Printing for the CLI: JSON for scripts, rich tables for people."""

from __future__ import annotations

import json
import sys
from typing import Any, Iterable, Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

console = Console()
err_console = Console(stderr=True)


def print_error(message: str) -> None:
    """``error: message`` as exactly one line on stderr: no wrapping at any width, no markup read from it."""
    text = Text("error:", style="red")
    text.append(" " + " ".join(message.split()))
    err_console.print(text, soft_wrap=True, highlight=False)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    console.print(table)


def print_fields(title: str, fields: dict[str, Any]) -> None:
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
