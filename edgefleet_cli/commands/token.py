"""``edgefleet token``: API tokens with roles (admin only). A new token is printed once; the server keeps a hash."""

from __future__ import annotations

from typing import Annotated

import typer

from ..client import ApiClient
from ..options import JsonOpt, ServerOpt, TokenOpt
from ..output import console, print_json, print_table

app = typer.Typer(help="Create, list and delete API tokens (viewer, operator, admin).", no_args_is_help=True)


@app.command()
def create(
    name: Annotated[str, typer.Option("--name", help="Unique name; it names the actor in the audit log")],
    role: Annotated[str, typer.Option("--role", help="viewer (read), operator (change the fleet) or admin "
                                                     "(keys and tokens)")] = "viewer",
    server: ServerOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """Create a token and print it once (it cannot be shown again)."""
    created = ApiClient(server, token).post("/api/tokens", json={"name": name, "role": role})
    if json_out:
        print_json(created)
        return
    console.print(f"token {created['name']!r} ({created['role']}); shown once, store it now:", highlight=False)
    typer.echo(created["token"])


@app.command("list")
def list_tokens(server: ServerOpt = None, token: TokenOpt = None, json_out: JsonOpt = False) -> None:
    """List tokens by name and role (never the tokens themselves)."""
    records = ApiClient(server, token).get("/api/tokens")
    if json_out:
        print_json(records)
        return
    print_table("API tokens", ["name", "role", "created"], [(t["name"], t["role"], t["created"]) for t in records])


@app.command()
def delete(
    name: Annotated[str, typer.Argument(help="Token name")],
    server: ServerOpt = None, token: TokenOpt = None,
) -> None:
    """Delete a token; requests with it are refused from now on."""
    ApiClient(server, token).request("DELETE", f"/api/tokens/{name}")
    console.print(f"token {name!r} deleted", highlight=False)
