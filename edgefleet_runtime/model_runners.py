"""Model runners: ``run(feeds) -> {name: array}`` and the tensor specs over one loaded model file.

:class:`OnnxModel` wraps an onnxruntime session, :class:`TfliteModel` a
LiteRT interpreter (one call at a time: the interpreter is not thread safe).
Both give ``inputs`` and ``outputs`` as ``(name, OIP datatype, shape)`` with
-1 for a dimension the model leaves open. The agent's runtime
(:mod:`edgefleet_runtime.runtime`) and the server's cloud scoring use them alike.
Not here: opening the session or interpreter on an accelerator
(:mod:`edgefleet_runtime.accelerators`), input checks, statistics.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from fleet_protocol import oip

from .inputs import InferenceError

_ONNX_TYPES = {"tensor(float)": "FP32", "tensor(double)": "FP64", "tensor(float16)": "FP16",
               "tensor(int8)": "INT8", "tensor(int16)": "INT16", "tensor(int32)": "INT32",
               "tensor(int64)": "INT64", "tensor(uint8)": "UINT8", "tensor(bool)": "BOOL",
               "tensor(string)": "BYTES"}


class OnnxModel:
    """``run(feeds) -> {name: array}`` over an onnxruntime session."""

    def __init__(self, session: Any):
        self.session = session
        self.output_names = [o.name for o in session.get_outputs()]
        self.inputs = [(i.name, _ONNX_TYPES.get(i.type, i.type), _shape(i.shape)) for i in session.get_inputs()]
        self.outputs = [(o.name, _ONNX_TYPES.get(o.type, o.type), _shape(o.shape)) for o in session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(None, feeds)))


class TfliteModel:
    """``run(feeds) -> {name: array}`` over a LiteRT interpreter (one call at a time: it is not thread safe)."""

    def __init__(self, interpreter: Any):
        self.interpreter = interpreter
        self._lock = threading.Lock()
        self._in = {d["name"]: d for d in interpreter.get_input_details()}
        self._out = [(d["name"], d["index"]) for d in interpreter.get_output_details()]
        self.inputs = [(d["name"], oip.datatype_of(np.empty(0, d["dtype"])), _tflite_shape(d))
                       for d in interpreter.get_input_details()]
        self.outputs = [(d["name"], oip.datatype_of(np.empty(0, d["dtype"])), _tflite_shape(d))
                        for d in interpreter.get_output_details()]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        interp = self.interpreter
        with self._lock:
            resized = False
            for name, array in feeds.items():
                detail = self._in.get(name)
                if detail is None:
                    raise InferenceError(f"model has no input {name!r}")
                if tuple(detail["shape"]) != array.shape:
                    interp.resize_tensor_input(detail["index"], list(array.shape))
                    resized = True
            if resized:
                interp.allocate_tensors()
                self._in = {d["name"]: d for d in interp.get_input_details()}
            for name, array in feeds.items():
                interp.set_tensor(self._in[name]["index"], array)
            interp.invoke()
            return {name: interp.get_tensor(index).copy() for name, index in self._out}


def _shape(dims: list) -> list[int]:
    return [d if isinstance(d, int) and d >= 0 else -1 for d in (dims or [])]


def _tflite_shape(detail: dict) -> list[int]:
    signature = detail.get("shape_signature")
    dims = signature if signature is not None and len(signature) else detail["shape"]
    return [int(d) for d in dims]
