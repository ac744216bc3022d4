"""Regenerates ``fleet_protocol/oip_grpc_descriptor.py`` from ``fleet_protocol/grpc_predict_v2.proto``.

``python -m tests.support.grpc_descriptor`` (or ``make grpc-descriptor``) runs protoc from grpcio-tools (the dev
extra) and writes the serialized FileDescriptorProto as a bytes literal. Why a descriptor and not protoc's
``_pb2.py``: the messages live in a private descriptor pool (Triton's client registers the same
``inference.*`` names in the default pool; both in one process would be a duplicate-symbol error), and a bytes
literal carries no protobuf gencode version check, so the ``grpc`` extra works with any protobuf >= 4.25.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO = ROOT / "fleet_protocol" / "grpc_predict_v2.proto"
MODULE = ROOT / "fleet_protocol" / "oip_grpc_descriptor.py"
HEADER = '''"""Generated from grpc_predict_v2.proto by ``make grpc-descriptor``; do not edit.

The serialized ``google.protobuf.FileDescriptorProto`` of the Open Inference Protocol gRPC service
(see :mod:`fleet_protocol.oip_grpc`, which loads it into a private descriptor pool).
"""

SERIALIZED = (
'''


def descriptor_bytes() -> bytes:
    """protoc's FileDescriptorProto of the .proto (no source info, so comments do not change it)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "oip.desc"
        subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO.parent}",
                        f"--descriptor_set_out={out}", PROTO.name], check=True)
        from google.protobuf import descriptor_pb2

        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
        return files[0].SerializeToString(deterministic=True)


def module_text(data: bytes) -> str:
    lines = [f"    {data[i:i + 48]!r}\n" for i in range(0, len(data), 48)]
    return HEADER + "".join(lines) + ")\n"


if __name__ == "__main__":
    MODULE.write_text(module_text(descriptor_bytes()), encoding="utf-8")
    print(f"wrote {MODULE.relative_to(ROOT)}")
