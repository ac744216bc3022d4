"""One check of a request's inputs against a model's tensor specs, so the agent and the cloud say the same.

:func:`mismatch` returns the first problem as one line that names the input
and what the module expects (``input 'features': missing; the module expects
FP32 [-1, 4]``), or None when the inputs fit. Pure, no I/O. Callers decide
what a problem means: the local scoring API and the cloud refuse the request
with 400 before scoring; the runtime asks only after a model or an entry
script failed, to tell a client's bad input (400) from the module's own
failure (500).

With ``any_batch`` the first (batch) dimension is not compared: an entry
script may take a batch its model cannot (it loops), and LiteRT resizes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from fleet_protocol import oip
from fleet_protocol.errors import MessageError

TensorSpec = tuple[str, str, list[int]]  # (name, OIP datatype, shape with -1 for dynamic dims)


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
