"""Entry point of the ``edgefleet`` command; failures print one line and exit non-zero.

The line is ``error: <reason>`` on stderr, never wrapped whatever the
terminal width (:func:`edgefleet_cli.output.print_error`); a missing
optional dependency names the extra to install.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

import typer

from fleet_protocol.errors import EdgefleetError

from .errors import CliError, missing_extra
from .output import print_error

# Each subcommand: the module of edgefleet_cli.commands that defines it and the attribute there, a Typer group
# (``app``) or a command function. In the order `edgefleet --help` lists them.
SUBCOMMANDS = {
    "server": "app", "agent": "app", "model": "app", "module": "app", "bundle": "app", "deploy": "app",
    "device": "app", "telemetry": "telemetry", "profile": "app", "score": "app", "capture": "app", "job": "app",
    "token": "app", "audit": "app", "keys": "app", "demo": "demo", "simulate": "simulate",
}


def build_app(only: str | None = None) -> typer.Typer:
    """The ``edgefleet`` app with every subcommand, or with just ``only``.

    A command line that names its subcommand gets only that one, so ``edgefleet agent run`` imports neither the
    server, nor httpx, nor the other commands: the agent's process holds what it runs.
    """
    app = typer.Typer(
        help="edgefleet: push ML models to a fleet of devices and score them on the device.\n\n"
             "Server commands read --server/EDGEFLEET_SERVER and --token/EDGEFLEET_TOKEN.",
        no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
    )
    app.callback()(_group)  # a group even when it holds one command, which Typer would otherwise run bare
    for name, attribute in SUBCOMMANDS.items():
        if only in (None, name):
            target = getattr(importlib.import_module(f".commands.{name}", __package__), attribute)
            if isinstance(target, typer.Typer):
                app.add_typer(target, name=name)
            else:
                app.command(name=name)(target)
    return app


def _group() -> None:
    pass


def __getattr__(name: str):
    if name == "app":  # `from edgefleet_cli.main import app`: every subcommand, as tests and embedders expect
        return build_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    logging.basicConfig(level=os.environ.get("EDGEFLEET_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise for CLI users
    try:
        named = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] in SUBCOMMANDS else None
        code = build_app(named)(standalone_mode=False)  # usage errors come here too, to be printed as one line
    except CliError as exc:
        print_error(str(exc))
        sys.exit(exc.exit_code)
    except EdgefleetError as exc:
        print_error(str(exc))
        sys.exit(1)
    except ModuleNotFoundError as exc:
        error = missing_extra(exc)
        if error is None:
            raise
        print_error(str(error))
        sys.exit(error.exit_code)
    except (KeyboardInterrupt, EOFError):
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - click's own errors, whose classes depend on typer's version
        kinds = {cls.__name__ for cls in type(exc).__mro__}
        if "NoArgsIsHelpError" in kinds:  # the help is printed already
            sys.exit(2)
        if "UsageError" in kinds and getattr(exc, "ctx", None) is not None:
            print_error(f"{exc.format_message()} (see `{exc.ctx.command_path} --help`)")
        elif "ClickException" in kinds:
            print_error(exc.format_message())
        elif "Abort" in kinds:
            print_error("aborted")
            sys.exit(1)
        else:
            raise
        sys.exit(exc.exit_code)
    sys.exit(code if type(code) is int else 0)  # a command that returns a value is not an exit status


if __name__ == "__main__":
    main()
