"""``edgefleet agent run``: the device agent daemon."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import CliError

app = typer.Typer(help="Run the device agent.", no_args_is_help=True)


@app.command()
def run(
    config: Annotated[Path, typer.Option("--config", "-c", exists=True, dir_okay=False,
                                         help="Agent configuration (TOML): device_id, state_dir, broker_url, "
                                              "trusted_keys, profile, ...")],
) -> None:
    """Connect to the broker, install what the server wants here, and serve predictions locally."""
    from edge_agent.agent import Agent
    from edge_agent.config import load_config

    try:
        agent_config = load_config(config)
    except (ValueError, OSError) as exc:
        raise CliError(f"{config}: {exc}") from None
    try:
        Agent(agent_config).run_forever()
    except OSError as exc:  # e.g. the scoring port is taken, or the state dir is not writable
        raise CliError(f"the agent could not start: {exc}") from None
