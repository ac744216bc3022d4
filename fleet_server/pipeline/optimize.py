"""Make a smaller or faster ONNX model: onnxruntime graph optimisation, then optional int8 quantisation.

- Graph optimisation: onnxruntime writes the graph it would run
  (``SessionOptions.optimized_model_filepath``). ``basic`` (the default) only
  folds constants and removes redundant nodes, so the result still runs on
  every execution provider; ``extended`` also fuses into CPU-only contrib ops.
- ``int8``: with no calibration data, ``quantize_dynamic`` (int8 weights,
  activations quantised at run time); with a calibration array,
  ``quantize_static`` (QDQ) whose ranges come from a ``CalibrationDataReader``
  over it. Models whose operators have no int8 kernels (tree ensembles such
  as ``TreeEnsembleClassifier``) come out unchanged: the report says so
  rather than failing.

:func:`compare` runs the old and new model on a sample and reports the size
change and how far the outputs moved. TFLite models are not handled here.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from fleet_protocol.errors import BadDataError

LEVELS = ("basic", "extended")
QUANTIZE_MODES = ("int8",)
_QUANTIZABLE_OPS = {"MatMul", "Gemm", "Conv", "ConvTranspose", "Attention", "LSTM", "GRU", "EmbedLayerNormalization"}
"""Operators onnxruntime's int8 quantiser has kernels for (weights-bearing ones)."""
_QUANTIZED_OPS = {"DynamicQuantizeLinear", "QuantizeLinear", "DequantizeLinear", "MatMulInteger", "ConvInteger",
                  "QLinearConv", "QLinearMatMul", "DynamicQuantizeMatMul", "QGemm", "QAttention"}


def optimize_onnx(data: bytes, *, level: str = "basic", quantize: str | None = None,
                  calibration: dict[str, np.ndarray] | None = None) -> tuple[bytes, dict]:
    """The optimised (and maybe quantised) model and what was done to it (``level``, ``quantize``, ``notes``)."""
    if level not in LEVELS:
        raise BadDataError(f"optimisation level --level (API: level) must be one of {', '.join(LEVELS)}, "
                           f"got {level!r}")
    if quantize is not None and quantize not in QUANTIZE_MODES:
        raise BadDataError(f"--quantize (API: quantize) must be one of {', '.join(QUANTIZE_MODES)}, "
                           f"got {quantize!r}")
    if calibration is not None and quantize is None:
        raise BadDataError("calibration data is only used for int8 quantisation: "
                           "add --quantize int8 (API: quantize=int8)")
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="edgefleet-opt-") as tmp:
        work = Path(tmp)
        optimized = _graph_optimize(data, work / "optimized.onnx", level)
        result, method = optimized, None
        if quantize is not None:
            ops = _op_types(optimized)
            if ops & _QUANTIZABLE_OPS:
                method = "static" if calibration is not None else "dynamic"
                result = _quantize(optimized, work, calibration)
                if method == "dynamic" and "Conv" in ops:
                    notes.append("dynamic int8 turns Conv into ConvInteger, which is often slower than float on "
                                 "CPU: give calibration data for static (QDQ) int8, and profile both")
            if not _op_types(result) & _QUANTIZED_OPS:
                notes.append(f"nothing was quantized: no operator of this model has an int8 kernel "
                             f"(ops: {', '.join(sorted(ops))}); the graph-optimised model is kept")
                result, method = optimized, None
    return result, {"level": level, "quantize": quantize, "method": method, "notes": notes}


def compare(before: bytes, after: bytes, samples: dict[str, np.ndarray] | None) -> dict:
    """Sizes, and per output the max abs difference (and label / argmax agreement) on ``samples``."""
    report: dict = {"size_before": len(before), "size_after": len(after),
                    "size_ratio": round(len(after) / len(before), 4), "outputs": {}}
    if samples is None:
        return report
    old, new = _run(before, samples), _run(after, samples)
    for name, a in old.items():
        b = new.get(name)
        if b is None or a.shape != b.shape:
            report["outputs"][name] = {"note": "output changed shape or disappeared"}
            continue
        row: dict = {}
        if a.dtype.kind in "iub":
            row["agreement"] = float(np.mean(a == b))
        elif a.dtype.kind == "f":
            row["max_abs_diff"] = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))
            if a.ndim == 2 and a.shape[1] > 1:
                row["argmax_agreement"] = float(np.mean(a.argmax(axis=1) == b.argmax(axis=1)))
        report["outputs"][name] = row
    return report


def _session(data: bytes, options=None):
    import onnxruntime as ort

    try:
        return ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
        raise BadDataError(f"onnxruntime cannot load the model: {str(exc).splitlines()[0][:300]}") from None


def _run(data: bytes, samples: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = _session(data)
    names = [o.name for o in session.get_outputs()]
    return {name: np.asarray(value) for name, value in zip(names, session.run(names, samples))}


def _graph_optimize(data: bytes, path: Path, level: str) -> bytes:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_BASIC if level == "basic"
                                        else ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
    options.optimized_model_filepath = str(path)
    options.log_severity_level = 3
    _session(data, options)
    return path.read_bytes()


def _quantize(data: bytes, work: Path, calibration: dict[str, np.ndarray] | None) -> bytes:
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)

    source, target = work / "float.onnx", work / "int8.onnx"
    source.write_bytes(data)
    ops = sorted(_QUANTIZABLE_OPS)  # only these: QDQ around e.g. Softmax or ai.onnx.ml ops breaks calibration
    # tensors after ai.onnx.ml operators (skl2onnx's Scaler) have no inferred type; they are float
    extra = {"DefaultTensorType": onnx.TensorProto.FLOAT}
    try:
        if calibration is None:
            quantize_dynamic(source, target, weight_type=QuantType.QInt8, op_types_to_quantize=ops,
                             extra_options=extra)
        else:
            quantize_static(source, target, _reader(CalibrationDataReader, calibration), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, op_types_to_quantize=ops,
                            extra_options=extra)
    except Exception as exc:  # noqa: BLE001 - the quantiser raises ValueError, RuntimeError, onnx errors
        raise BadDataError(f"int8 quantisation failed: {type(exc).__name__}: {exc}"[:300]) from None
    return target.read_bytes()


def _reader(base, calibration: dict[str, np.ndarray]):
    """A ``CalibrationDataReader`` (``base``) handing out one calibration row at a time."""

    class Reader(base):
        """One calibration row at a time, as the model's inputs."""

        def __init__(self, arrays: dict[str, np.ndarray]):
            count = min(len(a) for a in arrays.values())
            self._rows = iter([{k: a[i:i + 1] for k, a in arrays.items()} for i in range(count)])

        def get_next(self):
            return next(self._rows, None)

    return Reader(calibration)


def _op_types(data: bytes) -> set[str]:
    import onnx

    return {node.op_type for node in onnx.load_model_from_string(data).graph.node}
