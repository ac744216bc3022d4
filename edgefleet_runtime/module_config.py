"""What a module's ``config`` may hold, checked when a bundle is built: a typo is refused, never ignored.

The agent reads these sections of a manifest's ``config``, each with its own
parser, and falls back to defaults (with a warning in its log) when one is
bad. :func:`check_module_config` runs the same parsers when the bundle is
built (``edgefleet module build``, ``POST /api/bundles/from-module`` and
``/from-model``), so a bad section never gets signed:

============== ============================================================
``fallback``   :meth:`edgefleet_runtime.fallback.FallbackPolicy.from_configs`
``health``     :meth:`edgefleet_runtime.health.HealthPolicy.from_config`
``capture``    :class:`edgefleet_runtime.capture.CaptureSampler`
``accelerators`` a list of provider or delegate names (:mod:`edgefleet_runtime.runtime`)
``answers``    :func:`edgefleet_runtime.answers.declared_output`
============== ============================================================

Every other top-level key belongs to the entry script
(``context.config``). So a module without an entry script may hold only
these sections, and a key that is not a section but close to one's name
(``fallbak``) is refused as a typo either way. The error names the key and
the nearest valid one. :func:`check_answer_output` also checks that a
declared answer output is one of the model's outputs. Pure: no I/O.
"""

from __future__ import annotations

from typing import Callable

from fleet_protocol.errors import BadDataError, EdgefleetError
from fleet_protocol.fields import did_you_mean, refuse_unknown_keys


def _fallback(config: dict) -> None:
    from .fallback import FallbackPolicy

    FallbackPolicy.from_configs(config)


def _health(config: dict) -> None:
    from .health import HealthPolicy

    HealthPolicy.from_config(config)


def _capture(config: dict) -> None:
    from .capture import CaptureSampler

    if config["capture"] is None:  # as the agent reads it: no capture
        return
    if not isinstance(config["capture"], dict):
        raise BadDataError("config.capture must be an object")
    CaptureSampler(config["capture"])


def _accelerators(config: dict) -> None:
    value = config["accelerators"]
    if value is None:  # as the runtime reads it: no override
        return
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise BadDataError("config.accelerators must be a non-empty list of execution provider or delegate names, "
                           f"e.g. [\"CUDAExecutionProvider\", \"CPUExecutionProvider\"], got {value!r}")


def _answers(config: dict) -> None:
    from .answers import declared_output

    declared_output(config)


SECTIONS: dict[str, Callable[[dict], None]] = {
    "fallback": _fallback, "health": _health, "capture": _capture, "accelerators": _accelerators,
    "answers": _answers,
}
TYPO_CUTOFF = 0.75  # difflib ratio above which a non-section key is taken for a misspelt section


def check_module_config(config: object, *, has_entry: bool, where: str = "config") -> None:
    """Raise :class:`BadDataError` (code ``bad_module_config``) naming the first bad key of ``config``."""
    if not isinstance(config, dict):
        raise BadDataError(f"{where} must be a JSON object", code="bad_module_config")
    if not has_entry:
        _refuse(lambda: refuse_unknown_keys(config, SECTIONS, where=f"{where} (no entry script reads other keys)",
                                            error=BadDataError))
    for key in config:
        hint = did_you_mean(str(key), SECTIONS, cutoff=TYPO_CUTOFF)
        if key not in SECTIONS and hint:
            raise BadDataError(f"{where}: unknown section {key!r} ({hint}sections the agent "
                               f"reads: {', '.join(sorted(SECTIONS))})", code="bad_module_config")
    for key, check in SECTIONS.items():
        if key in config:
            _refuse(lambda: check(config))


def check_answer_output(config: dict, outputs: list[str], *, has_entry: bool,
                        where: str = "config") -> tuple[str, str] | None:
    """The declared answer output (:func:`~edgefleet_runtime.answers.declared_output`); refused if not among
    ``outputs``.

    An entry script returns what outputs it likes, so its module's declaration
    is checked only by the agent, against each result.
    """
    from .answers import declared_output

    declared = declared_output(config)
    if declared is not None and not has_entry and declared[0] not in outputs:
        raise BadDataError(f"{where}.answers: the model has no output {declared[0]!r} (its outputs: "
                           f"{', '.join(outputs)})", code="bad_module_config")
    return declared


def _refuse(check: Callable[[], None]) -> None:
    try:
        check()
    except EdgefleetError as exc:  # each section's parser has its own error type; a build refusal is bad data
        raise BadDataError(str(exc), code="bad_module_config") from None
