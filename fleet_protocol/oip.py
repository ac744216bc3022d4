"""Open Inference Protocol (KServe v2) request and response codec.

Tensors travel as ``{"name", "shape", "datatype", "data"}`` with row-major,
flattened ``data``. Decoding untrusted JSON raises
:class:`~fleet_protocol.errors.MessageError` with the reason, which servers
return as ``{"error": "..."}`` with status 400.
"""

from __future__ import annotations

from dataclasses import dataclass, field as dc_field
from math import prod

import numpy as np

from .errors import MessageError
from .fields import field

DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_), "UINT8": np.dtype(np.uint8), "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16), "INT32": np.dtype(np.int32), "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16), "FP32": np.dtype(np.float32), "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
_BY_DTYPE = {dtype: name for name, dtype in DATATYPES.items()}
MAX_ELEMENTS = 16_000_000
MAX_DIMS = 32  # numpy 1.x's limit; no model input has more


@dataclass
class InferenceRequest:
    inputs: dict[str, np.ndarray]
    id: str | None = None
    parameters: dict = dc_field(default_factory=dict)
    outputs: list[str] | None = None


def datatype_of(array: np.ndarray) -> str:
    if array.dtype.kind in ("U", "S", "O"):
        return "BYTES"
    try:
        return _BY_DTYPE[array.dtype]
    except KeyError:
        raise MessageError(f"dtype {array.dtype} has no Open Inference Protocol datatype") from None


def decode_tensor(raw: object, where: str) -> tuple[str, np.ndarray]:
    if not isinstance(raw, dict):
        raise MessageError(f"{where}: each tensor must be an object")
    name = field(raw, "name", str, where=where)
    where = f"{where} '{name}'"
    shape = field(raw, "shape", list, where=where)
    datatype = field(raw, "datatype", str, where=where)
    if datatype not in DATATYPES:
        raise MessageError(f"{where}: datatype {datatype!r} is not one of {', '.join(DATATYPES)}")
    count = checked_shape(shape, where)
    data = field(raw, "data", list, where=where)
    flat = _flatten(data) if data and isinstance(data[0], list) else data
    if len(flat) != count:
        raise MessageError(f"{where}: shape {shape} needs {count} values, got {len(flat)}")
    try:
        if datatype == "BYTES":
            if not all(isinstance(v, str) for v in flat):
                raise MessageError(f"{where}: BYTES data must be strings")
            array = np.array(flat, dtype=object)
        else:
            if not all(isinstance(v, (int, float, bool)) for v in flat):
                raise MessageError(f"{where}: {datatype} data must be numbers")
            array = np.asarray(flat, dtype=DATATYPES[datatype])
    except (TypeError, ValueError, OverflowError) as exc:
        raise MessageError(f"{where}: data does not fit {datatype}: {exc}") from None
    return name, array.reshape(shape)


def checked_shape(shape: list, where: str) -> int:
    """The element count of an untrusted ``shape``, checked in Python ints before numpy sees it.

    Each dimension and the product of the non-zero ones is at most MAX_ELEMENTS (a
    zero makes the count 0, but numpy still refuses ``[0, 2**70]``), with at most
    MAX_DIMS dimensions.
    """
    if len(shape) > MAX_DIMS:
        raise MessageError(f"{where}: shape has {len(shape)} dimensions, more than the {MAX_DIMS} allowed")
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise MessageError(f"{where}: shape must be a list of non-negative integers")
    if any(d > MAX_ELEMENTS for d in shape) or prod(d for d in shape if d) > MAX_ELEMENTS:
        raise MessageError(f"{where}: shape {_short(shape)} is more than the {MAX_ELEMENTS} elements allowed")
    return prod(shape)


def _short(shape: list) -> str:
    text = str(shape)
    return text if len(text) <= 80 else text[:77] + "..."


def encode_tensor(name: str, array: np.ndarray) -> dict:
    array = np.asarray(array)
    datatype = datatype_of(array)
    if datatype == "BYTES":
        data = [v.decode() if isinstance(v, bytes) else str(v) for v in array.ravel().tolist()]
    else:
        data = array.ravel().tolist()
    return {"name": name, "shape": list(array.shape), "datatype": datatype, "data": data}


def decode_request(body: dict) -> InferenceRequest:
    if not isinstance(body, dict):
        raise MessageError("inference request must be a JSON object")
    raw_inputs = field(body, "inputs", list, where="inference request")
    if not raw_inputs:
        raise MessageError("inference request: 'inputs' is empty")
    inputs = dict(decode_tensor(raw, "input") for raw in raw_inputs)
    outputs = None
    if body.get("outputs") is not None:
        raw_outputs = field(body, "outputs", list, where="inference request")
        outputs = [field(o, "name", str, where="requested output") if isinstance(o, dict) else _bad_output()
                   for o in raw_outputs]
    return InferenceRequest(
        inputs=inputs,
        id=field(body, "id", str, where="inference request", optional=True),
        parameters=field(body, "parameters", dict, where="inference request", optional=True, default={}),
        outputs=outputs,
    )


def encode_request(inputs: dict[str, np.ndarray], *, id: str | None = None, parameters: dict | None = None) -> dict:
    body: dict = {"inputs": [encode_tensor(n, a) for n, a in inputs.items()]}
    if id is not None:
        body["id"] = id
    if parameters:
        body["parameters"] = parameters
    return body


def encode_response(model_name: str, model_version: str | None, outputs: dict[str, np.ndarray], *,
                    id: str | None = None, parameters: dict | None = None) -> dict:
    body: dict = {"model_name": model_name, "outputs": [encode_tensor(n, a) for n, a in outputs.items()]}
    if model_version is not None:
        body["model_version"] = model_version
    if id is not None:
        body["id"] = id
    if parameters:
        body["parameters"] = parameters
    return body


def decode_response(body: dict) -> dict[str, np.ndarray]:
    if not isinstance(body, dict):
        raise MessageError("inference response must be a JSON object")
    return dict(decode_tensor(raw, "output") for raw in field(body, "outputs", list, where="inference response"))


def _flatten(values: list) -> list:
    flat: list = []
    stack = [values]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        else:
            flat.append(item)
    return flat


def _bad_output() -> str:
    raise MessageError("requested outputs must be objects with a 'name'")
