"""The one error the CLI shows: a single clear line on stderr and a non-zero exit.

A command that needs an optional part of the distribution (the server, the
agent, the Docker SDK) and finds it missing says which extra to install,
instead of ending in a ``ModuleNotFoundError`` traceback:
:func:`require_extra` checks up front, :func:`missing_extra` turns an import
that failed anyway into the same one line.
"""

from __future__ import annotations

import importlib.util
import sys
from itertools import takewhile

# The top-level module each extra brings (pyproject.toml's [project.optional-dependencies]).
EXTRA_MODULES = {
    "server": ("fastapi", "uvicorn", "sqlalchemy", "alembic", "psycopg", "onnx", "amqtt", "starlette", "pydantic", "multipart",
               "python_multipart", "sklearn", "skl2onnx"),
    "agent": ("paho", "onnxruntime", "ai_edge_litert", "psutil"),
    "container": ("docker",),
    "grpc": ("grpc",),
}
# What a command of each extra imports before it can do anything (checked by require_extra).
_NEEDED_AT_START = {"server": ("fastapi", "uvicorn", "sqlalchemy", "alembic", "onnx"), "agent": ("paho", "onnxruntime"),
                    "container": ("docker",)}


class CliError(Exception):
    """A failure to show the user as one line, e.g. ``error: model 'iris' has no version 9``."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


def require_extra(extra: str) -> None:
    """Raise :class:`CliError` naming ``pip install 'edgefleet[extra]'`` when a module it brings is missing."""
    for module in _NEEDED_AT_START[extra]:
        if importlib.util.find_spec(module) is None:
            raise _extra_error(extra, module)


def missing_extra(exc: ModuleNotFoundError) -> CliError | None:
    """The one-line error for an import of an optional dependency that failed, or None for any other module."""
    top = (exc.name or "").split(".")[0]
    for extra, modules in EXTRA_MODULES.items():
        if top in modules:
            return _extra_error(extra, top)
    return None


def _extra_error(extra: str, module: str) -> CliError:
    words = list(takewhile(lambda arg: not arg.startswith("-"), sys.argv[1:]))[:2]
    what = f"`edgefleet {' '.join(words)}`" if words else "this command"
    return CliError(f"{what} needs the {extra} extra: pip install 'edgefleet[{extra}]' "
                    f"(the module {module!r} is not installed)")
