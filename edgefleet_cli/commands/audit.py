"""``edgefleet audit``: the server's append-only log of changes (who, what, when, target, the object acted on)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..client import ApiClient
from ..options import JsonOpt, ServerOpt, TokenOpt
from ..output import print_json, print_table

app = typer.Typer(help="Read the audit log.", no_args_is_help=True)


@app.command("list")
def list_entries(
    actor: Annotated[Optional[str], typer.Option(help="Only changes made with this token name")] = None,
    after_id: Annotated[int, typer.Option("--after-id", help="Only entries with a larger id")] = 0,
    limit: Annotated[int, typer.Option(help="At most this many entries")] = 200,
    server: ServerOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """List audit entries, oldest first."""
    entries = ApiClient(server, token).get("/api/audit", actor=actor, after_id=after_id, limit=limit)
    if json_out:
        print_json(entries)
        return
    print_table("Audit log", ["id", "when", "who", "what", "object", "status"],
                [(e["id"], e["ts"], e["actor"], e["action"], format_object(e.get("object") or {}), e["status"])
                 for e in entries])


def format_object(obj: dict) -> str:
    """``model=iris version=3``; lists joined with commas, maps as ``k:v`` pairs, digests shortened to 12."""
    def value(v) -> str:
        if isinstance(v, dict):
            return ",".join(f"{k}:{x}" for k, x in sorted(v.items())) or "{}"
        if isinstance(v, list):
            return ",".join(map(str, v)) or "[]"
        return str(v)

    return " ".join(f"{k}={value(v)[:12] if k in ('digest', 'sha256') else value(v)}" for k, v in obj.items())
