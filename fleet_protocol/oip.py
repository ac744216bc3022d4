"""Open Inference Protocol (KServe v2) request and response codec.

Tensors travel as ``{"name", "shape", "datatype", "data"}`` with row-major,
flattened ``data``, or as raw bytes (:func:`tensor_from_raw`, :func:`tensor_to_raw`):
little-endian and row-major, BOOL one byte each, BYTES each element a 4-byte
little-endian length then its bytes, as Triton lays them out. Raw bytes are what
the binary tensor data extension of REST (:mod:`fleet_protocol.oip_binary`) and
gRPC's ``raw_input_contents`` carry: one decoding path per tensor format, shared.
Decoding untrusted input raises :class:`~fleet_protocol.errors.MessageError` with
the reason, which servers return as ``{"error": "..."}`` with status 400.
BYTES elements are text here (UTF-8 in raw form), as JSON carries them.
"""

from __future__ import annotations

from dataclasses import dataclass, field as dc_field
import struct
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
    output_parameters: dict[str, dict] = dc_field(default_factory=dict)  # each requested output's parameters

    def binary_outputs(self, names: list[str]) -> list[str]:
        """Which of ``names`` go back as raw bytes: ``parameters.binary_data_output`` for all, unless an
        output's own ``parameters.binary_data`` says otherwise (the binary tensor data extension)."""
        default = self.parameters.get("binary_data_output") is True
        chosen = []
        for name in names:
            own = self.output_parameters.get(name, {}).get("binary_data")
            if own is True or (own is None and default):
                chosen.append(name)
        return chosen


def datatype_of(array: np.ndarray) -> str:
    if array.dtype.kind in ("U", "S", "O"):
        return "BYTES"
    try:
        return _BY_DTYPE[array.dtype]
    except KeyError:
        raise MessageError(f"dtype {array.dtype} has no Open Inference Protocol datatype") from None


def decode_tensor(raw: object, where: str, binary: "_RawReader | None" = None) -> tuple[str, np.ndarray]:
    """A JSON tensor; with ``binary``, one whose ``parameters.binary_data_size`` says its bytes follow there."""
    if not isinstance(raw, dict):
        raise MessageError(f"{where}: each tensor must be an object")
    name = field(raw, "name", str, where=where)
    where = f"{where} '{name}'"
    shape = field(raw, "shape", list, where=where)
    datatype = field(raw, "datatype", str, where=where)
    size = field(raw, "parameters", dict, where=where, optional=True, default={}).get("binary_data_size")
    if size is not None:
        if binary is None:
            raise MessageError(f"{where}: binary_data_size given, but the request has no binary part "
                               "(send the Inference-Header-Content-Length header)")
        if "data" in raw:
            raise MessageError(f"{where}: give either 'data' or parameters.binary_data_size, not both")
        return name, tensor_from_raw(datatype, shape, binary.take(size, where), where)
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


def tensor_from_raw(datatype: str, shape: list, data: bytes | memoryview, where: str) -> np.ndarray:
    """A tensor from its raw bytes (see the module docstring), every length checked against ``shape``."""
    if datatype not in DATATYPES:
        raise MessageError(f"{where}: datatype {datatype!r} is not one of {', '.join(DATATYPES)}")
    count = checked_shape(shape, where)
    if datatype == "BYTES":
        return np.array(_split_bytes(memoryview(data), count, where), dtype=object).reshape(shape)
    dtype = DATATYPES[datatype]
    if len(data) != count * dtype.itemsize:
        raise MessageError(f"{where}: shape {_short(shape)} of {datatype} needs {count * dtype.itemsize} bytes, "
                           f"got {len(data)}")
    if datatype == "BOOL":
        return (np.frombuffer(data, np.uint8) != 0).reshape(shape)
    return np.frombuffer(data, dtype.newbyteorder("<")).astype(dtype).reshape(shape)  # a copy: writable, native


def tensor_to_raw(array: np.ndarray) -> tuple[str, bytes]:
    """``(datatype, raw bytes)`` of ``array``; the inverse of :func:`tensor_from_raw`."""
    array = np.asarray(array)
    datatype = datatype_of(array)
    if datatype != "BYTES":
        return datatype, np.ascontiguousarray(array, DATATYPES[datatype].newbyteorder("<")).tobytes()
    parts = []
    for value in array.ravel().tolist():
        item = value if isinstance(value, bytes) else str(value).encode()
        parts += [struct.pack("<I", len(item)), item]
    return datatype, b"".join(parts)


def _split_bytes(data: memoryview, count: int, where: str) -> list[str]:
    items, offset = [], 0
    for i in range(count):
        if offset + 4 > len(data):
            raise MessageError(f"{where}: BYTES element {i} has no 4-byte length ({len(data)} bytes for {count} "
                               "elements)")
        (length,) = struct.unpack_from("<I", data, offset)
        offset += 4
        if length > len(data) - offset:
            raise MessageError(f"{where}: BYTES element {i} says {length} bytes, only {len(data) - offset} remain")
        try:
            items.append(str(data[offset:offset + length], "utf-8"))
        except UnicodeDecodeError:
            raise MessageError(f"{where}: BYTES element {i} is not UTF-8 text") from None
        offset += length
    if offset != len(data):
        raise MessageError(f"{where}: {len(data) - offset} bytes left after the {count} BYTES elements")
    return items


class _RawReader:
    """The binary part of a request, handed out in order, each piece at most what is left."""

    def __init__(self, data: bytes | memoryview):
        self.data, self.offset = memoryview(data), 0

    def take(self, size: object, where: str) -> memoryview:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise MessageError(f"{where}: binary_data_size must be a non-negative integer, got {size!r}")
        if size > len(self.data) - self.offset:
            raise MessageError(f"{where}: binary_data_size {size} is more than the {len(self.data) - self.offset} "
                               "bytes left in the body")
        piece = self.data[self.offset:self.offset + size]
        self.offset += size
        return piece

    def finish(self) -> None:
        if self.offset != len(self.data):
            raise MessageError(f"{len(self.data) - self.offset} bytes after the last binary input "
                               "(binary_data_size values do not add up to the body)")


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


def decode_request(body: dict, binary: bytes | memoryview | None = None) -> InferenceRequest:
    """A JSON request; ``binary``: the bytes after its JSON header (binary tensor data extension)."""
    if not isinstance(body, dict):
        raise MessageError("inference request must be a JSON object")
    raw_inputs = field(body, "inputs", list, where="inference request")
    if not raw_inputs:
        raise MessageError("inference request: 'inputs' is empty")
    reader = None if binary is None else _RawReader(binary)
    inputs = dict(decode_tensor(raw, "input", reader) for raw in raw_inputs)
    if reader is not None:
        reader.finish()
    outputs, output_parameters = None, {}
    if body.get("outputs") is not None:
        raw_outputs = field(body, "outputs", list, where="inference request")
        outputs = [field(o, "name", str, where="requested output") if isinstance(o, dict) else _bad_output()
                   for o in raw_outputs]
        output_parameters = {o["name"]: field(o, "parameters", dict, where=f"output '{o['name']}'", optional=True,
                                              default={}) for o in raw_outputs}
    return InferenceRequest(
        inputs=inputs,
        id=field(body, "id", str, where="inference request", optional=True),
        parameters=field(body, "parameters", dict, where="inference request", optional=True, default={}),
        outputs=outputs,
        output_parameters=output_parameters,
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
