"""A model version's drift reference from a baseline: the inputs it was trained or validated on.

The baseline is ``.npy`` (one array, a one-input model), ``.npz`` (one array
per input name; :func:`fleet_server.pipeline.samples.load_samples`) or
``.csv`` (numbers, one row per row, an optional header line; a one-input
model). ONNX models are run on the baseline so their outputs get a reference
too; TFLite outputs are left out (named in ``skipped``). Images and other
tensors of rank three or more are refused with a message saying so (see
:mod:`fleet_protocol.drift`). Nothing is stored here.
"""

from __future__ import annotations

import csv
import io

import numpy as np

from fleet_protocol import drift
from fleet_protocol.errors import BadDataError
from fleet_protocol.oip import DATATYPES

from ..pipeline.samples import check_shape, load_samples

MAX_CSV_ROWS = 1_000_000


def reference_from_baseline(model: bytes, runtime: str, inputs: list[dict], baseline: bytes,
                            filename: str) -> drift.Reference:
    """The reference of ``baseline`` for a model whose registry ``inputs`` are given."""
    if filename.lower().endswith(".csv"):
        spec = _only_input(inputs)
        arrays = {spec["name"]: _csv(baseline, spec)}
        check_shape(arrays[spec["name"]], spec, "drift baseline")
    else:
        arrays = load_samples(baseline, inputs, what="drift baseline")
    return reference_from_arrays(model, runtime, arrays)


def reference_from_arrays(model: bytes, runtime: str, arrays: dict[str, np.ndarray]) -> drift.Reference:
    drift.check_tabular(arrays)  # before the model runs: an image baseline gets the message that says why
    outputs = _onnx_outputs(model, arrays) if runtime == "onnx" else {}
    reference = drift.build_reference(arrays, outputs)
    if runtime != "onnx":
        return drift.Reference(reference.rows, reference.features, ("outputs of a tflite model",))
    return reference


def _only_input(inputs: list[dict]) -> dict:
    if len(inputs) != 1:
        raise BadDataError(f"the model has {len(inputs)} inputs; give the drift baseline as an .npz with one array "
                           f"per input ({', '.join(i['name'] for i in inputs)})")
    return inputs[0]


def _csv(data: bytes, spec: dict) -> np.ndarray:
    try:
        lines = list(csv.reader(io.StringIO(data.decode("utf-8"))))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise BadDataError(f"the drift baseline is not a UTF-8 CSV file: {exc}") from None
    lines = [line for line in lines if line]
    if lines and not _numeric(lines[0]):
        lines = lines[1:]  # a header
    if not lines or len(lines) > MAX_CSV_ROWS:
        raise BadDataError(f"the drift baseline CSV must hold 1 to {MAX_CSV_ROWS} rows of numbers")
    for number, line in enumerate(lines, start=1):
        if len(line) != len(lines[0]) or not _numeric(line):
            raise BadDataError(f"drift baseline CSV row {number}: expected {len(lines[0])} numbers, got {line[:8]!r}")
    return np.array(lines, dtype=np.float64).astype(DATATYPES.get(spec["datatype"], np.float32))


def _numeric(line: list[str]) -> bool:
    try:
        [float(cell) for cell in line]
    except ValueError:
        return False
    return True


def _onnx_outputs(model: bytes, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        return {name: np.asarray(value) for name, value in zip(names, session.run(names, arrays))}
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
        raise BadDataError(f"the model cannot score the drift baseline: {str(exc).splitlines()[0][:300]}") from None
