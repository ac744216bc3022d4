"""What a model file is: runtime sniffed from its bytes, inputs and outputs read by loading it.

ONNX is parsed with ``onnx`` and loaded with onnxruntime (CPU); TFLite is
loaded with the LiteRT interpreter. A file that neither runtime can load is
refused with :class:`BadModelError` naming the reason. The file name never
matters. An ONNX classifier converted with ZipMap (an ``ai.onnx.ml`` ZipMap
node, a sequence-of-maps output) is refused too: its probabilities would
reach clients as a BYTES string of a dict; the message says how to convert
without it. Nothing is rewritten here. Tensor types are reported as Open Inference Protocol datatypes and
unknown dimensions as -1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fleet_protocol.errors import BadDataError
from fleet_protocol.oip import DATATYPES

TFLITE_IDENTIFIER = b"TFL3"
_ORT_TYPES = {
    "tensor(bool)": "BOOL", "tensor(uint8)": "UINT8", "tensor(uint16)": "UINT16", "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64", "tensor(int8)": "INT8", "tensor(int16)": "INT16", "tensor(int32)": "INT32",
    "tensor(int64)": "INT64", "tensor(float16)": "FP16", "tensor(float)": "FP32", "tensor(double)": "FP64",
    "tensor(bfloat16)": "BF16", "tensor(string)": "BYTES",
}
_NUMPY_TYPES = {np.dtype(np.uint16): "UINT16", np.dtype(np.uint32): "UINT32", np.dtype(np.uint64): "UINT64",
                **{dtype: name for name, dtype in DATATYPES.items()}}


class BadModelError(BadDataError):
    code = "bad_model"
    category = "load"


@dataclass(frozen=True)
class ModelInfo:
    runtime: str
    inputs: list[dict]
    outputs: list[dict]


def sniff_runtime(data: bytes) -> str | None:
    """``"tflite"`` for a TFLite flatbuffer, ``"onnx"`` for an ONNX protobuf, else None. Content only."""
    if _is_tflite(data):
        return "tflite"
    return "onnx" if _parse_onnx(data) is not None else None


def inspect_model(data: bytes) -> ModelInfo:
    """Load the model with its runtime and describe its inputs and outputs."""
    if not data:
        raise BadModelError("the model file is empty")
    if _is_tflite(data):
        return _inspect_tflite(data)
    model = _parse_onnx(data)
    if model is not None:
        _refuse_zipmap(model)
        return _inspect_onnx(data)
    raise BadModelError("the file is neither an ONNX model (not an ONNX protobuf with a graph) nor a TFLite model "
                        "(no 'TFL3' identifier at bytes 4..8)")


def _is_tflite(data: bytes) -> bool:
    return len(data) >= 8 and data[4:8] == TFLITE_IDENTIFIER


def _parse_onnx(data: bytes):
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError):
        return None
    if model.ir_version <= 0 or not model.HasField("graph") or not model.graph.output:
        return None
    return model


def _refuse_zipmap(model) -> None:
    """A ZipMap node or a sequence(map) output: refuse, saying how to convert the classifier without it."""
    zipmaps = [n for n in model.graph.node if n.op_type == "ZipMap" and n.domain == "ai.onnx.ml"]
    mapped = [o.name for o in model.graph.output
              if o.type.HasField("sequence_type") and o.type.sequence_type.elem_type.HasField("map_type")]
    if not zipmaps and not mapped:
        return
    where = f"output {mapped[0]!r}" if mapped else f"node {zipmaps[0].name or 'ZipMap'!r}"
    raise BadModelError(
        f"the ONNX model's {where} is a ZipMap (ai.onnx.ml ZipMap, a sequence of maps): devices would return its "
        "probabilities as a BYTES string of a dict. Convert the classifier without it: skl2onnx "
        "`to_onnx(clf, X, options={id(clf): {\"zipmap\": False}})`, or register the pickled estimator with "
        "`edgefleet model register model.pkl --convert` (the server converts with ZipMap off)")


def _inspect_onnx(data: bytes) -> ModelInfo:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
        raise BadModelError(f"the ONNX model does not load in onnxruntime: {_first_line(exc)}") from None

    def describe(arg) -> dict:
        shape = arg.shape if isinstance(arg.shape, list) else []
        return {"name": arg.name, "datatype": _ORT_TYPES.get(arg.type, arg.type),
                "shape": [d if isinstance(d, int) and d >= 0 else -1 for d in shape]}

    return ModelInfo("onnx", [describe(a) for a in session.get_inputs()], [describe(a) for a in session.get_outputs()])


def _inspect_tflite(data: bytes) -> ModelInfo:
    from ai_edge_litert.interpreter import Interpreter

    try:
        interpreter = Interpreter(model_content=data)
        inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    except Exception as exc:  # noqa: BLE001 - the interpreter raises ValueError or RuntimeError
        raise BadModelError(f"the TFLite model does not load in the LiteRT interpreter: {_first_line(exc)}") from None

    def describe(detail: dict) -> dict:
        shape = detail.get("shape_signature")
        if shape is None or len(shape) == 0:
            shape = detail["shape"]
        dtype = np.dtype(detail["dtype"])
        datatype = "BYTES" if dtype.kind in ("O", "S", "U") else _NUMPY_TYPES.get(dtype, str(dtype).upper())
        return {"name": detail["name"], "datatype": datatype, "shape": [int(d) for d in shape]}

    return ModelInfo("tflite", [describe(d) for d in inputs], [describe(d) for d in outputs])


def _first_line(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
