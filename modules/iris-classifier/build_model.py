"""Rebuild model.onnx: a random forest on the iris data set, exported with skl2onnx.

    python modules/iris-classifier/build_model.py

Needs scikit-learn and skl2onnx (the ``dev`` extra). The iris data ships with
scikit-learn, so nothing is downloaded. The forest has a fixed random_state
and the export is deterministic, so rebuilding gives the same file.
ZipMap is disabled so the outputs are plain tensors: ``label`` (int64, [N])
and ``probabilities`` (float32, [N, 3]); the input is ``float_input``
(float32, [N, 4]: sepal length, sepal width, petal length, petal width, in cm).
"""

from __future__ import annotations

from pathlib import Path

N_TREES = 50
MAX_DEPTH = 4
RANDOM_STATE = 42
# Opsets every onnxruntime >= 1.17 runs (TreeEnsembleClassifier is ai.onnx.ml v3).
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
MODEL_FILE = Path(__file__).resolve().parent / "model.onnx"


def train():
    """The fitted forest (the same one every time)."""
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier

    iris = load_iris()
    model = RandomForestClassifier(n_estimators=N_TREES, max_depth=MAX_DEPTH, random_state=RANDOM_STATE)
    model.fit(iris.data.astype("float32"), iris.target)
    return model


def export(model) -> bytes:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    onnx_model = convert_sklearn(
        model,
        name="iris-classifier",
        initial_types=[("float_input", FloatTensorType([None, 4]))],
        options={id(model): {"zipmap": False}},
        target_opset=TARGET_OPSET,
    )
    # skl2onnx can list the default domain twice; keep one entry per domain.
    versions: dict[str, int] = {}
    for opset in onnx_model.opset_import:
        versions[opset.domain] = max(opset.version, versions.get(opset.domain, 0))
    del onnx_model.opset_import[:]
    for domain, version in sorted(versions.items()):
        entry = onnx_model.opset_import.add()
        entry.domain, entry.version = domain, version
    onnx_model.doc_string = "Random forest on the iris data set; see modules/iris-classifier/README.md"
    return onnx_model.SerializeToString()


def main() -> None:
    data = export(train())
    MODEL_FILE.write_bytes(data)
    print(f"wrote {MODEL_FILE} ({len(data)} bytes)")


if __name__ == "__main__":
    main()
