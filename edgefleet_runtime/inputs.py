"""Whose fault a failed request is: one check of its inputs against the model's tensor specs.

:func:`mismatch` returns the first problem as one line that names the input
and what the module expects (``input 'features': missing; the module expects
FP32 [-1, 4]``), or None when the inputs fit. Pure, no I/O. The local
scoring API and the cloud refuse such a request with 400 before scoring. The
runtime asks only after a model or an entry script failed
(:func:`failure_of`): inputs that do not fit are the client's fault
(:class:`InferenceError`, 400, do not retry); inputs that fit mean the
module failed (:class:`ModuleError`, 500, or 503 when temporary: retry).

With ``any_batch`` the first (batch) dimension is not compared: an entry
script may take a batch its model cannot (it loops), and LiteRT resizes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import numpy as np

from fleet_protocol import oip
from fleet_protocol.errors import BadDataError, EdgefleetError, MessageError, TransportError

TensorSpec = tuple[str, str, list[int]]  # (name, OIP datatype, shape with -1 for dynamic dims)


class InferenceError(BadDataError):
    """The client's request does not fit the module (input name, datatype or shape): 400, do not retry."""

    code = "bad_request"
    category = "message"


class ModuleError(EdgefleetError):
    """The model or the entry script failed on inputs that fit: our side, 500 (503 when ``temporary``)."""

    code = "module_failed"
    category = "health"

    def __init__(self, message: str, *, temporary: bool = False):
        super().__init__(message, code="module_busy" if temporary else None)
        self.temporary = temporary


def failure_of(what: str, specs: list[TensorSpec], *,
               any_batch: bool) -> Callable[[BaseException, object], EdgefleetError]:
    """``failure(exc, inputs)``: the error a request that raised ``exc`` answers with (see the docstring)."""

    def failure(exc: BaseException, inputs: object) -> EdgefleetError:
        if not isinstance(inputs, Mapping):
            return InferenceError(f"{what}: inputs must be a dict of arrays by input name")
        problem = mismatch(specs, inputs, any_batch=any_batch)
        if problem is not None:
            return InferenceError(f"{what}: {problem}")
        if isinstance(exc, BadDataError):  # the entry script refused the request on purpose
            return exc
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        return ModuleError(f"{what} failed: {type(exc).__name__}: {reason}",
                           temporary=isinstance(exc, (MemoryError, TransportError)))

    return failure


def mismatch(specs: Iterable[TensorSpec], inputs: Mapping[str, object], *, any_batch: bool = False,
             what: str = "module") -> str | None:
    """The first input that does not fit ``specs`` (unknown, wrong datatype or shape, missing), else None."""
    by_name = {name: (datatype, list(shape)) for name, datatype, shape in specs}
    for name, value in inputs.items():
        spec = by_name.get(name)
        if spec is None:
            expected = "; ".join(f"{n} {d} {_dims(s)}" for n, (d, s) in by_name.items()) or "none"
            return f"input {name!r}: unknown; the {what}'s inputs are {expected}"
        datatype, shape = spec
        array = np.asarray(value) if not isinstance(value, np.ndarray) else value
        try:
            got = oip.datatype_of(array)
        except MessageError:  # a dtype the protocol has no name for
            got = str(array.dtype)
        if got != datatype:
            return f"input {name!r}: {got}; the {what} expects {datatype} {_dims(shape)}"
        skip = 1 if any_batch else 0
        if shape and (len(shape) != array.ndim
                      or any(d not in (-1, g) for d, g in zip(shape[skip:], array.shape[skip:]))):
            return f"input {name!r}: shape {list(array.shape)}; the {what} expects {datatype} {_dims(shape)}"
    for name, (datatype, shape) in by_name.items():
        if name not in inputs:
            return f"input {name!r}: missing; the {what} expects {datatype} {_dims(shape)}"
    return None


def _dims(shape: list[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"
