"""The binary tensor data extension of Open Inference Protocol REST (what Triton and KServe's SDK send).

A request body is a JSON header of ``Inference-Header-Content-Length`` bytes,
then the raw bytes of each input whose ``parameters.binary_data_size`` is set,
in the order of ``inputs`` (raw layout: :func:`fleet_protocol.oip.tensor_from_raw`).
A response puts outputs the request asked for as binary
(:meth:`~fleet_protocol.oip.InferenceRequest.binary_outputs`) after its JSON header
the same way, with that header's length in the response header of the same name.
Every length is checked against the body and the shapes against
:func:`~fleet_protocol.oip.checked_shape`; a lie is a :class:`MessageError` (400).
Servers announce :data:`EXTENSION` in their ``/v2`` metadata. No I/O.
"""

from __future__ import annotations

import json

import numpy as np

from . import oip
from .canonical import parse_json_object
from .errors import MessageError
from .fields import is_ascii_decimal

HEADER = "Inference-Header-Content-Length"
EXTENSION = "binary_tensor_data"


def decode_request(body: bytes, header_length: str | None) -> oip.InferenceRequest:
    """A request body: plain JSON when ``header_length`` (the HTTP header's value) is None, else JSON + bytes."""
    if header_length is None:
        return oip.decode_request(parse_json_object(body, what="request body", max_bytes=len(body)))
    value = header_length.strip()
    if not is_ascii_decimal(value):
        raise MessageError(f"{HEADER} must be a decimal byte count, got {header_length[:40]!r}")
    if len(value.lstrip("0")) > len(str(len(body))):  # before int(), which refuses over 4,300 digits
        raise MessageError(f"{HEADER} is a {len(value)}-digit number, more than the {len(body)}-byte body")
    size = int(value)
    if size > len(body):
        raise MessageError(f"{HEADER} is {size} bytes, more than the {len(body)}-byte body")
    header = parse_json_object(body[:size], what="inference header", max_bytes=size)
    return oip.decode_request(header, memoryview(body)[size:])


def encode_response(model_name: str, model_version: str | None, outputs: dict[str, np.ndarray], *,
                    binary: list[str], id: str | None = None, parameters: dict | None = None) -> tuple[bytes, int]:
    """``(body, JSON header length)`` with the ``binary`` outputs' bytes after the header."""
    tensors, parts = [], []
    for name, array in outputs.items():
        if name in binary:
            array = np.asarray(array)
            datatype, raw = oip.tensor_to_raw(array)
            tensors.append({"name": name, "shape": list(array.shape), "datatype": datatype,
                            "parameters": {"binary_data_size": len(raw)}})
            parts.append(raw)
        else:
            tensors.append(oip.encode_tensor(name, array))
    doc: dict = {"model_name": model_name, "outputs": tensors}
    for key, value in (("model_version", model_version), ("id", id), ("parameters", parameters or None)):
        if value is not None:
            doc[key] = value
    header = json.dumps(doc, separators=(",", ":")).encode()
    return header + b"".join(parts), len(header)
