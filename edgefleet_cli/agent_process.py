"""The process that ``edgefleet agent run`` becomes: the agent alone, without the CLI that parsed its command line.

``edgefleet agent run`` checks its options and its config with Typer, then
replaces its own process image (:func:`exec_agent`: same pid, stdio,
environment and signals, so systemd, the supervisor and benchmarks follow
it) with ``python -P -m edgefleet_cli.agent_process CONFIG``, which runs
the agent (:func:`main`). Typer, click, the pydantic that Typer coerces
parameters with and rich (about 9 MB of resident memory, B5) stay out of a
daemon that runs for months. This module parses no options (the CLI did)
and imports nothing of the CLI but its one-line error.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import NoReturn

_ROOT = Path(__file__).resolve().parents[1]  # the folder holding edgefleet_cli, edge_agent, edgefleet_runtime, ...


def exec_agent(config: Path) -> NoReturn:
    """Replace this process with the agent's own, running ``config``; does not return."""
    env = dict(os.environ)
    first = Path(sys.path[0] or ".").resolve() if sys.path else None
    if first == _ROOT and str(_ROOT) not in sys.path[1:]:
        # This code came from the working directory (python -m in a checkout), which -P leaves off the path:
        # the agent imports the same code through PYTHONPATH instead.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_ROOT), env.get("PYTHONPATH")]))
    sys.stdout.flush()
    sys.stderr.flush()
    # -P: the working directory is not on the path, so a checkout there never shadows the installed agent.
    os.execve(sys.executable, [sys.executable, "-P", "-m", __name__, str(config.resolve())], env)


def main() -> NoReturn:
    """Run the agent with the config named by ``argv[1]`` until SIGINT/SIGTERM or a self-update; exit its code."""
    logging.basicConfig(level=os.environ.get("EDGEFLEET_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = Path(sys.argv[1])
    from edge_agent.agent import Agent
    from edge_agent.config import load_config
    from fleet_protocol.errors import EdgefleetError

    try:
        agent_config = load_config(config)
    except (ValueError, OSError) as exc:
        _fail(f"{config}: {exc}")
    agent = Agent(agent_config)
    try:
        agent.run_forever()
    except (EdgefleetError, ValueError, OSError) as exc:  # e.g. port taken, state dir not writable, bad root file
        _fail(f"the agent could not start: {exc}")
    sys.exit(agent.exit_code)  # non-zero: a new agent version is current, the supervisor (or systemd) starts it


def _fail(message: str) -> NoReturn:
    from .output import print_error

    print_error(message)
    sys.exit(1)


if __name__ == "__main__":
    main()
