"""Captured inputs and outputs: the ``data`` of a telemetry record of kind ``capture``.

Telemetry is canonical JSON, which has no floats, so a captured tensor
carries its raw little-endian bytes in base64::

    {"name": "x", "datatype": "FP32", "shape": [2, 4], "b64": "..."}     numbers
    {"name": "s", "datatype": "BYTES", "shape": [2], "strings": ["a", "b"]}

A capture record::

    {"model": "iris", "version": 3, "accelerator": "CPUExecutionProvider", "scored_on": "local",
     "inputs": [tensor, ...], "outputs": [tensor, ...]}

with ``"reason": "low_confidence"`` for a hard example (joint inference: the
rows below the module's confidence threshold, with the answer they got).

:func:`decode_capture` validates untrusted data and returns the tensors as
arrays, or raises :class:`~fleet_protocol.errors.MessageError`. No I/O.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

import numpy as np

from .errors import MessageError
from .fields import count_field, field, name_field
from .oip import DATATYPES, checked_shape, datatype_of

KIND = "capture"


@dataclass(frozen=True)
class Capture:
    model: str
    version: int | None
    accelerator: str
    scored_on: str
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    reason: str | None = None


def encode_tensor(name: str, array: np.ndarray) -> dict:
    array = np.asarray(array)
    datatype = datatype_of(array)
    doc = {"name": name, "datatype": datatype, "shape": list(array.shape)}
    if datatype == "BYTES":
        doc["strings"] = [v.decode() if isinstance(v, bytes) else str(v) for v in array.ravel().tolist()]
    else:
        doc["b64"] = base64.b64encode(np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
                                      ).decode("ascii")
    return doc


def encode_capture(*, model: str, version: int | None, accelerator: str, scored_on: str,
                   inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray], reason: str | None = None) -> dict:
    data = {"model": model, "version": version, "accelerator": accelerator, "scored_on": scored_on,
            "inputs": [encode_tensor(n, a) for n, a in inputs.items()],
            "outputs": [encode_tensor(n, a) for n, a in outputs.items()]}
    if reason is not None:
        data["reason"] = reason
    return data


def decode_tensor(raw: object, where: str) -> tuple[str, np.ndarray]:
    if not isinstance(raw, dict):
        raise MessageError(f"{where}: each tensor must be an object")
    name = field(raw, "name", str, where=where)
    datatype = field(raw, "datatype", str, where=where)
    if datatype not in DATATYPES:
        raise MessageError(f"{where} {name!r}: datatype {datatype!r} is unknown")
    shape = field(raw, "shape", list, where=where)
    count = checked_shape(shape, f"{where} {name!r}")
    if datatype == "BYTES":
        strings = field(raw, "strings", list, where=where)
        if len(strings) != count or not all(isinstance(s, str) for s in strings):
            raise MessageError(f"{where} {name!r}: needs {count} strings")
        return name, np.array(strings, dtype=object).reshape(shape)
    try:
        data = base64.b64decode(field(raw, "b64", str, where=where), validate=True)
    except binascii.Error:
        raise MessageError(f"{where} {name!r}: b64 is not base64") from None
    dtype = DATATYPES[datatype].newbyteorder("<")
    if len(data) != count * dtype.itemsize:
        raise MessageError(f"{where} {name!r}: shape {shape} needs {count * dtype.itemsize} bytes, got {len(data)}")
    return name, np.frombuffer(data, dtype=dtype).astype(DATATYPES[datatype]).reshape(shape)


def decode_capture(data: dict) -> Capture:
    where = "capture"
    return Capture(
        model=name_field(data, "model", where=where),
        version=count_field(data, "version", where=where, minimum=1, optional=True),
        accelerator=field(data, "accelerator", str, where=where, optional=True, default=""),
        scored_on=field(data, "scored_on", str, where=where, optional=True, default="local"),
        inputs=dict(decode_tensor(t, "captured input") for t in field(data, "inputs", list, where=where)),
        outputs=dict(decode_tensor(t, "captured output") for t in field(data, "outputs", list, where=where)),
        reason=name_field(data, "reason", where=where) if data.get("reason") is not None else None,
    )
