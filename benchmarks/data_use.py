"""A device's update data use for a small model change (one layer retrained) vs the whole bundle, with and without
zstandard-compressed chunk payloads.

Builds a real ONNX MLP (``--layers`` dense layers of ``--width`` FP32, random
weights), then version 2 with one middle layer's weights retrained (new
values, same shapes). Both are cut into chunks exactly as the bundler cuts
them (:func:`fleet_protocol.chunking.content_defined_chunks`, 256 KiB max),
and a device that holds version 1 needs only the chunks of version 2 it does
not have. Each chunk as it travels: the encrypted payload (header, id and GCM
tag: 52 bytes on top of the data) over plaintext, or over the zstandard
(level 3) compressed plaintext, since ciphertext does not compress. HTTP and
MQTT framing are left out (a few hundred bytes per chunk either way).
Needs ``zstandard`` (the ``bench`` extra); a measurement, not a feature: chunks
are not compressed on the wire today.

    python -m benchmarks.data_use [--width 1024] [--layers 6]
"""

from __future__ import annotations

import argparse

import numpy as np
import onnx
import zstandard
from onnx import TensorProto, helper, numpy_helper

from benchmarks.report import write_result
from fleet_protocol.chunking import content_defined_chunks

CHUNK_MAX = 262_144
PAYLOAD_OVERHEAD = 4 + 32 + 16  # magic, chunk id, GCM tag (fleet_protocol.bundle_crypto)


def mlp(weights: list[np.ndarray]) -> bytes:
    """A real ONNX model: x -> (MatMul, Relu) per weight matrix."""
    nodes, inits, prev = [], [], "x"
    for i, w in enumerate(weights):
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]))
        nodes.append(helper.make_node("Relu", [f"m{i}"], [f"h{i}"]))
        prev = f"h{i}"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, weights[0].shape[0]])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, weights[-1].shape[1]])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


def wire_bytes(chunks: list[bytes], compress: bool) -> int:
    if not compress:
        return sum(len(c) + PAYLOAD_OVERHEAD for c in chunks)
    zstd = zstandard.ZstdCompressor(level=3)
    return sum(min(len(zstd.compress(c)), len(c)) + PAYLOAD_OVERHEAD for c in chunks)


def run(width: int = 1024, layers: int = 6, seed: int = 7) -> dict:
    rng = np.random.default_rng(seed)
    weights = [(rng.standard_normal((width, width)) * 0.02).astype(np.float32) for _ in range(layers)]
    v1 = mlp(weights)
    retrained = list(weights)
    layer = layers // 2
    retrained[layer] = (weights[layer] + rng.standard_normal(weights[layer].shape) * 0.001).astype(np.float32)
    v2 = mlp(retrained)

    def cut(data: bytes) -> dict[str, bytes]:
        out, at = {}, 0
        for ref in content_defined_chunks(data, CHUNK_MAX):
            out[ref.sha256] = data[at:at + ref.size]
            at += ref.size
        return out

    have, new = cut(v1), cut(v2)
    changed = [data for sha, data in new.items() if sha not in have]
    whole = list(new.values())
    result = {"model_bytes": len(v2), "layers": layers, "width": width, "retrained_layer": layer,
              "layer_bytes": weights[layer].nbytes, "chunks": len(whole), "changed_chunks": len(changed)}
    for name, chunks in (("whole", whole), ("delta", changed)):
        result[f"{name}_bytes"] = wire_bytes(chunks, compress=False)
        result[f"{name}_zstd_bytes"] = wire_bytes(chunks, compress=True)
    return result


def row(r: dict) -> str:
    mb = 1e6
    return (f"| data use | update after one layer of a {r['model_bytes'] / mb:.1f} MB ONNX MLP is retrained "
            f"({r['layer_bytes'] / mb:.1f} MB layer; {r['changed_chunks']} of {r['chunks']} chunks change) | "
            f"{r['delta_bytes'] / mb:.2f} MB ({r['delta_zstd_bytes'] / mb:.2f} MB with zstd) | "
            f"{r['whole_bytes'] / mb:.2f} MB whole bundle ({r['whole_zstd_bytes'] / mb:.2f} MB with zstd) | "
            f"{r['delta_bytes'] / r['whole_bytes']:.2f}x | measured, no target | n/a |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=6)
    args = parser.parse_args()
    result = run(args.width, args.layers)
    write_result("data-use", result)
    print(result)
    print(row(result))
