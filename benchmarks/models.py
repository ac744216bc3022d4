"""The models the benchmarks score: a 50-tree random forest and a small CNN (about 1 ms)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper


def random_forest_onnx(trees: int = 50) -> tuple[bytes, dict[str, np.ndarray]]:
    """A scikit-learn random forest on iris as ONNX (ZipMap off), and one input row."""
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier

    features, labels = load_iris(return_X_y=True)
    forest = RandomForestClassifier(n_estimators=trees, max_depth=6, random_state=0).fit(features, labels)
    sample = features[:1].astype(np.float32)
    model = to_onnx(forest, sample, options={id(forest): {"zipmap": False}}, target_opset=15)
    return model.SerializeToString(), {model.graph.input[0].name: sample}


def cnn_onnx(size: int = 192, seed: int = 0) -> tuple[bytes, dict[str, np.ndarray]]:
    """Conv(3→32) → ReLU → Conv(32→64, stride 2) → ReLU → GlobalAveragePool → Gemm(64→10)."""
    rng = np.random.default_rng(seed)

    def weight(name: str, shape: list[int]) -> onnx.TensorProto:
        return helper.make_tensor(name, TensorProto.FLOAT, shape, (rng.normal(size=shape) * 0.1).astype(np.float32).ravel())

    nodes = [
        helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w3", "b3"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "cnn", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
        initializer=[weight("w1", [32, 3, 3, 3]), weight("b1", [32]), weight("w2", [64, 32, 3, 3]),
                     weight("b2", [64]), weight("w3", [10, 64]), weight("b3", [10])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString(), {"image": rng.normal(size=(1, 3, size, size)).astype(np.float32)}
