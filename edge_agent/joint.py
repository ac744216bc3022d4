"""Joint inference, the pure part: which rows of a local answer are hard, and the answer with the cloud's rows in.

A module with ``fallback.confidence_below`` (see :mod:`edgefleet_runtime.fallback`)
has each row of its local answer checked after scoring: a row whose largest
value of the declared probability output is below the threshold (or is not
a number) is *hard*. Only the hard rows go to the cloud (:func:`take_rows`
slices every input along its first axis; when every row is hard the inputs
go whole, so a module whose inputs are not batched, e.g. one image for an
entry script, still works one request at a time), and the cloud's rows
replace the local ones in place (:func:`merge`), so a batch of 64 with three
hard rows costs the cloud three.
The answer is marked per row in its OIP ``parameters`` (:func:`marks`), whose
values are strings, numbers or booleans only, as the protocol allows::

    scored_on            "local", "cloud" (every row) or "joint" (some rows)
    fallback_reason      "low_confidence" when any row was below the threshold
    cloud_rows           "0,5,9": the rows the cloud answered
    cloud_model          name and version of the model that answered them
    low_confidence       true when hard rows kept their local answer (the cloud
    low_confidence_rows  "0,5,9"  was unreachable, refused, or not configured)

A probability output missing from the answer, or not a 2-D float array,
finds no hard rows (an entry script decides its outputs; nothing to
compare). :func:`take_rows` raises :class:`MessageError` when some rows are
hard and an input does not have one row per row of the answer, and
:func:`merge` when the cloud's answer cannot stand in for the local one (an
output missing, another row shape or kind, a local output not one row per
row); the caller then keeps the local answer, marked low-confidence. No I/O.
"""

from __future__ import annotations

import numpy as np

from edgefleet_runtime.fallback import LOW_CONFIDENCE
from fleet_protocol.errors import MessageError



def hard_rows(outputs: dict[str, np.ndarray], probability_output: str, below: float) -> tuple[np.ndarray, int]:
    """Indices of the rows whose largest probability is below ``below`` or not a number, and the number of rows.

    The indices are empty when no row is hard or the output is missing or unreadable.
    """
    value = outputs.get(probability_output)
    if value is None:
        return np.empty(0, dtype=np.intp), 0
    probabilities = np.asarray(value)
    if probabilities.dtype.kind != "f" or probabilities.ndim != 2 or not probabilities.size:
        return np.empty(0, dtype=np.intp), 0
    return np.flatnonzero(~(probabilities.max(axis=1) >= below)), len(probabilities)  # NaN: not sure either


def take_rows(inputs: dict[str, np.ndarray], rows: np.ndarray, total: int) -> dict[str, np.ndarray]:
    """Each input's ``rows`` of ``total`` (inputs without a batch axis, or every row, are sent whole).

    MessageError when an input does not have one row per row of the answer: its hard rows cannot be told apart.
    """
    if len(rows) == total:
        return dict(inputs)
    for name, array in inputs.items():
        if array.ndim and len(array) != total:
            raise MessageError(f"input {name!r} has {len(array)} rows and the answer {total}: the hard rows "
                               f"cannot be sent alone")
    return {name: array[rows] if array.ndim else array for name, array in inputs.items()}


def merge(local: dict[str, np.ndarray], cloud: dict[str, np.ndarray], rows: np.ndarray,
          total: int) -> dict[str, np.ndarray]:
    """``local`` (``total`` rows) with its ``rows`` replaced by the cloud's answer for them (``local`` is not changed).

    When every row is hard the cloud's outputs replace the local ones whole (same shapes).
    """
    whole = len(rows) == total
    merged = {}
    for name, mine in local.items():
        mine = np.asarray(mine)
        theirs = cloud.get(name)
        if theirs is None:
            raise MessageError(f"the cloud model's answer has no output {name!r} (it has: {', '.join(cloud)})")
        theirs = np.asarray(theirs)
        if not whole and (mine.ndim == 0 or len(mine) != total):
            raise MessageError(f"output {name!r} has shape {list(mine.shape)}, not one row per row of the answer "
                               f"({total}): the cloud's rows cannot replace some of its rows")
        if theirs.shape != (mine.shape if whole else (len(rows), *mine.shape[1:])):
            raise MessageError(f"output {name!r}: the cloud answered shape {list(theirs.shape)} for {len(rows)} "
                               f"rows, the local answer has {list(mine.shape)}")
        if not _same_kind(mine, theirs):
            raise MessageError(f"output {name!r}: the cloud answered {theirs.dtype}, the local answer is {mine.dtype}")
        out = mine.astype(object) if mine.dtype.kind in "US" else mine.copy()  # a fixed width would cut strings
        out[... if whole else rows] = theirs
        merged[name] = out
    return merged


def _same_kind(mine: np.ndarray, theirs: np.ndarray) -> bool:
    kinds = (mine.dtype.kind, theirs.dtype.kind)
    if "O" in kinds or "U" in kinds or "S" in kinds:  # strings (BYTES): either representation
        return all(k in "OUS" for k in kinds)
    return np.can_cast(theirs.dtype, mine.dtype, casting="same_kind")


def _row_list(rows: np.ndarray) -> str:
    return ",".join(str(int(r)) for r in rows)


def marks(*, rows: int, hard: np.ndarray, answered: bool, cloud_model: str = "",
          cloud_version: str = "") -> dict:
    """The ``parameters`` that say where the rows of an answer were scored (none when no row was hard)."""
    if not len(hard):
        return {}
    if not answered:
        return {"scored_on": "local", "fallback_reason": LOW_CONFIDENCE, "low_confidence": True,
                "low_confidence_rows": _row_list(hard)}
    return {"scored_on": "cloud" if len(hard) == rows else "joint", "fallback_reason": LOW_CONFIDENCE,
            "cloud_rows": _row_list(hard), "cloud_model": cloud_model, "cloud_model_version": cloud_version}
