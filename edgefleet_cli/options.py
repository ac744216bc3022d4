"""Options shared by the commands that talk to the fleet server."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

ServerOpt = Annotated[Optional[str], typer.Option(
    "--server", envvar="EDGEFLEET_SERVER", help="Fleet server URL [default: http://127.0.0.1:8080]",
    show_default=False)]
TokenOpt = Annotated[Optional[str], typer.Option(
    "--token", envvar="EDGEFLEET_TOKEN", help="API token (printed by the server at first start)", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table, for scripts.")]
