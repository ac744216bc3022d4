"""Sample and calibration arrays: ``.npy`` (one array, for a one-input model) or ``.npz`` (one array per input name).

Read with ``allow_pickle=False``, so a sample file never runs code. Each
array is cast to its input's datatype; the first dimension is the batch, and
the other dimensions must be the ones the input fixes (a baseline with 3
columns for a ``[-1, 4]`` input is refused here, naming both shapes, rather
than by the runtime).
"""

from __future__ import annotations

import io

import numpy as np

from fleet_protocol.errors import BadDataError
from fleet_protocol.oip import DATATYPES

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"  # .npz


def load_samples(data: bytes, inputs: list[dict], *, what: str = "sample") -> dict[str, np.ndarray]:
    """``{input name: array}`` for the model's ``inputs`` (as stored in the registry)."""
    if not data.startswith((NPY_MAGIC, ZIP_MAGIC)):  # numpy would take it for a pickle and suggest allow_pickle
        raise BadDataError(f"the {what} file is not a .npy or .npz array file (write it with numpy.save or "
                           f"numpy.savez)")
    try:
        loaded = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise BadDataError(f"the {what} file is not a readable .npy or .npz array file: {exc}"[:300]) from None
    if isinstance(loaded, np.ndarray):
        if len(inputs) != 1:
            raise BadDataError(f"the model has {len(inputs)} inputs; give the {what} as an .npz with one array per "
                               f"input ({', '.join(i['name'] for i in inputs)})")
        arrays = {inputs[0]["name"]: loaded}
    else:
        arrays = {key: loaded[key] for key in loaded.files}
        missing = [i["name"] for i in inputs if i["name"] not in arrays]
        if missing:
            raise BadDataError(f"the {what} .npz has no array for input(s) {', '.join(missing)}")
    out = {}
    for spec in inputs:
        array = arrays[spec["name"]]
        if array.ndim == 0 or array.shape[0] == 0:
            raise BadDataError(f"the {what} array for {spec['name']!r} is empty")
        check_shape(array, spec, what)
        dtype = DATATYPES.get(spec["datatype"])
        out[spec["name"]] = np.ascontiguousarray(array.astype(dtype) if dtype is not None else array)
    return out


def check_shape(array: np.ndarray, spec: dict, what: str) -> None:
    """Refuse an array whose dimensions after the first are not the ones ``spec`` (an input) fixes."""
    shape = spec.get("shape")
    if not shape or len(shape) != array.ndim:
        return  # the model does not say, or another rank: the caller's own check words that (drift: not tabular)
    if any(want is not None and want >= 0 and want != got for want, got in zip(shape[1:], array.shape[1:])):
        raise BadDataError(f"the {what} array for {spec['name']!r} has shape {list(array.shape)}; the model's input "
                           f"takes {list(shape)} (the first dimension is the rows, -1 is any size)")


def dump_samples(arrays: dict[str, np.ndarray]) -> bytes:
    """The arrays as ``.npz`` bytes (how the profiler hands them to its subprocess)."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()
