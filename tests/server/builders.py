"""Tiny real models and module archives built in memory for the server tests."""

from __future__ import annotations

import io
import json
import tarfile

import flatbuffers
from ai_edge_litert import schema_py_generated as tfl
from onnx import TensorProto, helper


def tiny_onnx(scale: float = 2.0, *, inputs: int = 4) -> bytes:
    """``y = x * scale`` with x: FP32 [batch, inputs]; ``scale`` changes the bytes."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", inputs])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", inputs])
    k = helper.make_tensor("k", TensorProto.FLOAT, [1], [scale])
    graph = helper.make_graph([helper.make_node("Mul", ["x", "k"], ["y"])], "scale", [x], [y], [k])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


def tiny_tflite() -> bytes:
    """``y = x + x`` with x: FP32 [1, 4], written with the TFLite flatbuffer schema LiteRT ships."""
    model = tfl.ModelT()
    model.version = 3
    model.buffers = [tfl.BufferT()]
    code = tfl.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = tfl.BuiltinOperator.ADD
    code.version = 1
    model.operatorCodes = [code]

    def tensor(name: str) -> tfl.TensorT:
        t = tfl.TensorT()
        t.name, t.shape, t.type, t.buffer = name, [1, 4], tfl.TensorType.FLOAT32, 0
        return t

    op = tfl.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 0], [1]
    op.builtinOptionsType, op.builtinOptions = tfl.BuiltinOptions.AddOptions, tfl.AddOptionsT()
    graph = tfl.SubGraphT()
    graph.tensors, graph.inputs, graph.outputs, graph.operators = [tensor("x"), tensor("y")], [0], [1], [op]
    model.subgraphs = [graph]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


SAMPLE = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}


def module_files(name: str = "scaler", model: bytes | None = None, **spec_extra) -> dict[str, bytes]:
    """A module folder as ``{path: bytes}``: module.json, model.onnx, main.py, sample.json."""
    spec = {"name": name, "description": "scales its input", "runtime": "onnx", "model": "model.onnx",
            "entry": "main.py", "sample": "sample.json", "files": ["model.onnx", "main.py", "sample.json"],
            "config": {"threshold": "high"}, **spec_extra}
    return {"module.json": json.dumps(spec).encode(), "model.onnx": model if model is not None else tiny_onnx(),
            "main.py": b"def predict(inputs):\n    return inputs\n", "sample.json": json.dumps(SAMPLE).encode()}


def tar_gz(files: dict[str, bytes], *, links: dict[str, str] | None = None, prefix: str = "") -> bytes:
    """A .tar.gz of ``files``; ``links`` adds symlinks ``{name: target}``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path, content in files.items():
            info = tarfile.TarInfo(prefix + path)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(prefix + name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buffer.getvalue()
