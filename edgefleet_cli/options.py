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
MaxP95Opt = Annotated[Optional[float], typer.Option(
    "--max-p95-ms", min=0, help="Latency gate: refuse unless the model's stored profile, scaled to each target "
                                "device's firmware profile, has p95 <= this")]
MaxMemoryOpt = Annotated[Optional[float], typer.Option(
    "--max-memory-mb", min=0, help="Memory gate: refuse unless the stored profile's peak memory is <= this")]


def gate_body(max_p95_ms: float | None, max_memory_mb: float | None) -> dict | None:
    """The ``gate`` of a deployment or rollout request, or None when neither limit is given."""
    gate = {k: v for k, v in (("p95_ms", max_p95_ms), ("memory_mb", max_memory_mb)) if v is not None}
    return gate or None
