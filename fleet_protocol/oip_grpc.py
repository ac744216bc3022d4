"""Open Inference Protocol gRPC messages (``inference.GRPCInferenceService``) and their codec. No I/O.

The message classes come from :mod:`fleet_protocol.oip_grpc_descriptor`
(generated from ``grpc_predict_v2.proto``) in a private descriptor pool, so
Triton's client, which registers the same ``inference.*`` names, can live in
the same process. Needs ``protobuf`` (the ``grpc`` extra); nothing else in
:mod:`fleet_protocol` imports this module.

Tensors decode through :mod:`fleet_protocol.oip`: ``raw_input_contents``
through :func:`~fleet_protocol.oip.tensor_from_raw` (the same path as REST's
binary data), typed ``contents`` through the JSON path; responses always
carry ``raw_output_contents``, as Triton's do. Errors: :class:`MessageError`.
"""

from __future__ import annotations

import numpy as np
from google.protobuf import descriptor_pool, message_factory

from . import oip
from .errors import MessageError
from .oip_grpc_descriptor import SERIALIZED

SERVICE = "inference.GRPCInferenceService"
MODULE_PARAMETER = "edgefleet_module"  # true: score the module's bundle (REST's /v2/modules/{name}/versions/{v})

_pool = descriptor_pool.DescriptorPool()
_pool.AddSerializedFile(SERIALIZED)


def _message(name: str) -> type:
    return message_factory.GetMessageClass(_pool.FindMessageTypeByName(f"inference.{name}"))


ServerLiveRequest, ServerLiveResponse = _message("ServerLiveRequest"), _message("ServerLiveResponse")
ServerReadyRequest, ServerReadyResponse = _message("ServerReadyRequest"), _message("ServerReadyResponse")
ModelReadyRequest, ModelReadyResponse = _message("ModelReadyRequest"), _message("ModelReadyResponse")
ServerMetadataRequest, ServerMetadataResponse = _message("ServerMetadataRequest"), _message("ServerMetadataResponse")
ModelMetadataRequest, ModelMetadataResponse = _message("ModelMetadataRequest"), _message("ModelMetadataResponse")
ModelInferRequest, ModelInferResponse = _message("ModelInferRequest"), _message("ModelInferResponse")

# method name -> (request class, response class)
METHODS = {"ServerLive": (ServerLiveRequest, ServerLiveResponse),
           "ServerReady": (ServerReadyRequest, ServerReadyResponse),
           "ModelReady": (ModelReadyRequest, ModelReadyResponse),
           "ServerMetadata": (ServerMetadataRequest, ServerMetadataResponse),
           "ModelMetadata": (ModelMetadataRequest, ModelMetadataResponse),
           "ModelInfer": (ModelInferRequest, ModelInferResponse)}

_CONTENTS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
             "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
             "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
             "FP64": "fp64_contents", "BYTES": "bytes_contents"}


def parameters_from(fields) -> dict:
    """A parameters map as plain values (bool, int or str)."""
    out = {}
    for key, param in fields.items():
        kind = param.WhichOneof("parameter_choice")
        out[key] = getattr(param, kind) if kind is not None else None
    return out


def set_parameters(target, values: dict) -> None:
    for key, value in values.items():
        if isinstance(value, bool):
            target[key].bool_param = value
        elif isinstance(value, int) and -2**63 <= value < 2**63:
            target[key].int64_param = value
        elif value is not None:
            target[key].string_param = str(value)


def decode_infer_request(message) -> oip.InferenceRequest:
    """A ``ModelInferRequest`` as an :class:`~fleet_protocol.oip.InferenceRequest`; MessageError when malformed."""
    if not message.inputs:
        raise MessageError("inference request: 'inputs' is empty")
    raw = message.raw_input_contents
    if raw and len(raw) != len(message.inputs):
        raise MessageError(f"inference request: {len(message.inputs)} inputs but {len(raw)} raw_input_contents")
    inputs: dict[str, np.ndarray] = {}
    for i, tensor in enumerate(message.inputs):
        where = f"input '{tensor.name}'"
        shape = list(tensor.shape)
        if raw:
            inputs[tensor.name] = oip.tensor_from_raw(tensor.datatype, shape, raw[i], where)
            continue
        kind = _CONTENTS.get(tensor.datatype)
        if kind is None:
            raise MessageError(f"{where}: datatype {tensor.datatype!r} needs raw_input_contents")
        contents = getattr(tensor.contents, kind)
        count = oip.checked_shape(shape, where)
        if len(contents) != count:  # before the values become Python objects (8+ bytes for each byte sent)
            raise MessageError(f"{where}: shape {shape} needs {count} values, got {len(contents)}")
        data = list(contents)
        if kind == "bytes_contents":
            try:
                data = [item.decode() for item in data]
            except UnicodeDecodeError:
                raise MessageError(f"{where}: BYTES contents must be UTF-8 text") from None
        inputs.update([oip.decode_tensor({"name": tensor.name, "shape": shape, "datatype": tensor.datatype,
                                          "data": data}, "input")])
    outputs = [o.name for o in message.outputs] or None
    return oip.InferenceRequest(inputs=inputs, id=message.id or None, parameters=parameters_from(message.parameters),
                                outputs=outputs,
                                output_parameters={o.name: parameters_from(o.parameters) for o in message.outputs})


def encode_infer_request(model: str, version: int | str | None, request: oip.InferenceRequest):
    """The ``ModelInferRequest`` of ``request`` (raw contents), for a gRPC client."""
    message = ModelInferRequest(model_name=model, model_version="" if version is None else str(version),
                                id=request.id or "")
    set_parameters(message.parameters, request.parameters)
    for name, array in request.inputs.items():
        array = np.asarray(array)
        datatype, raw = oip.tensor_to_raw(array)
        message.inputs.add(name=name, datatype=datatype, shape=list(array.shape))
        message.raw_input_contents.append(raw)
    for name in request.outputs or ():
        message.outputs.add(name=name)
    return message


def encode_infer_response(model_name: str, model_version: str | None, outputs: dict[str, np.ndarray], *,
                          id: str | None = None, parameters: dict | None = None):
    message = ModelInferResponse(model_name=model_name, model_version=model_version or "", id=id or "")
    set_parameters(message.parameters, parameters or {})
    for name, array in outputs.items():
        array = np.asarray(array)
        datatype, raw = oip.tensor_to_raw(array)
        message.outputs.add(name=name, datatype=datatype, shape=list(array.shape))
        message.raw_output_contents.append(raw)
    return message


def decode_infer_response(message) -> dict:
    """A ``ModelInferResponse`` as the OIP JSON response document (what the REST client returns)."""
    raw = message.raw_output_contents
    if raw and len(raw) != len(message.outputs):
        raise MessageError(f"inference response: {len(message.outputs)} outputs but {len(raw)} raw contents")
    outputs = {}
    for i, tensor in enumerate(message.outputs):
        if raw:
            outputs[tensor.name] = oip.tensor_from_raw(tensor.datatype, list(tensor.shape), raw[i],
                                                       f"output '{tensor.name}'")
        else:
            kind = _CONTENTS.get(tensor.datatype, "")
            data = [v.decode(errors="replace") if isinstance(v, bytes) else v
                    for v in getattr(tensor.contents, kind, [])]
            outputs.update([oip.decode_tensor({"name": tensor.name, "shape": list(tensor.shape),
                                               "datatype": tensor.datatype, "data": data}, "output")])
    return oip.encode_response(message.model_name, message.model_version or None, outputs, id=message.id or None,
                               parameters=parameters_from(message.parameters))


def encode_model_metadata(doc: dict):
    """A ``ModelMetadataResponse`` from the REST metadata document (``name, versions, platform, inputs, outputs``)."""
    message = ModelMetadataResponse(name=doc["name"], versions=doc["versions"], platform=doc["platform"])
    for kind in ("inputs", "outputs"):
        for spec in doc[kind]:
            getattr(message, kind).add(name=spec["name"], datatype=spec["datatype"], shape=list(spec["shape"]))
    return message
