"""Entry point of the ``edgefleet`` command; failures print one line and exit non-zero.

The line is ``error: <reason>`` on stderr, never wrapped whatever the
terminal width (:func:`edgefleet_cli.output.print_error`); a missing
optional dependency names the extra to install.
"""

from __future__ import annotations

import logging
import os
import sys

import typer

from fleet_protocol.errors import EdgefleetError

from .commands import agent, bundle, capture, demo, deploy, device, model, module, profile, score, server
from .commands import audit, job, keys, simulate, token
from .errors import CliError, missing_extra
from .output import print_error

app = typer.Typer(
    help="edgefleet: push ML models to a fleet of devices and score them on the device.\n\n"
         "Server commands read --server/EDGEFLEET_SERVER and --token/EDGEFLEET_TOKEN.",
    no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
)
app.add_typer(server.app, name="server")
app.add_typer(agent.app, name="agent")
app.add_typer(model.app, name="model")
app.add_typer(module.app, name="module")
app.add_typer(bundle.app, name="bundle")
app.add_typer(deploy.app, name="deploy")
app.add_typer(device.app, name="device")
app.add_typer(profile.app, name="profile")
app.add_typer(score.app, name="score")
app.add_typer(capture.app, name="capture")
app.add_typer(job.app, name="job")
app.add_typer(token.app, name="token")
app.add_typer(audit.app, name="audit")
app.add_typer(keys.app, name="keys")
app.command(name="demo")(demo.demo)
app.command(name="simulate")(simulate.simulate)


def main() -> None:
    logging.basicConfig(level=os.environ.get("EDGEFLEET_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise for CLI users
    try:
        code = app(standalone_mode=False)  # usage errors come here too, to be printed as one line
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
