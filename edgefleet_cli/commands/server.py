"""``edgefleet server run``: the fleet server (API, dashboard, MQTT link, embedded broker)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(help="Run the fleet server.", no_args_is_help=True)


@app.command()
def run(
    data_dir: Annotated[Path, typer.Option(envvar="EDGEFLEET_DATA_DIR", help="Where the SQLite store, keys, "
                                           "model files and chunks live")] = Path("edgefleet-data"),
    host: Annotated[str, typer.Option(help="Address the API binds to")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="API and dashboard port")] = 8080,
    broker: Annotated[Optional[str], typer.Option(help="External broker, e.g. mqtt://127.0.0.1:1883; "
                                                  "default: start the embedded one")] = None,
    broker_port: Annotated[int, typer.Option(help="Port of the embedded broker")] = 1883,
) -> None:
    """Start the server; at the first start of a data dir it prints the admin token once."""
    from fleet_server.config import ServerConfig
    from fleet_server.runner import run_server

    run_server(ServerConfig(data_dir=data_dir, host=host, port=port, broker_url=broker,
                            embedded_broker_port=broker_port))
