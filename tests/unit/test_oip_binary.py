"""Raw tensor bytes (REST's binary tensor data extension, gRPC's raw contents): round trips and hostile lengths."""

from __future__ import annotations

import json
import struct
import tracemalloc

import numpy as np
import pytest

from fleet_protocol import oip, oip_binary, oip_grpc
from fleet_protocol.errors import MessageError
from tests.support import grpc_descriptor


def binary_body(header: dict, *raw: bytes) -> tuple[bytes, str]:
    text = json.dumps(header).encode()
    return text + b"".join(raw), str(len(text))


def one_input(shape: list, datatype: str, size: int) -> dict:
    return {"inputs": [{"name": "x", "shape": shape, "datatype": datatype, "parameters": {"binary_data_size": size}}]}


@pytest.mark.parametrize("array", [
    np.arange(12, dtype=np.float32).reshape(3, 4), np.array([[1, -2]], np.int64), np.array([True, False, True]),
    np.arange(6, dtype=np.float16), np.array([7, 250], np.uint8), np.array(["a", "", "été"], dtype=object),
])
def test_raw_bytes_round_trip_every_datatype(array):
    datatype, raw = oip.tensor_to_raw(array)
    back = oip.tensor_from_raw(datatype, list(array.shape), raw, "input 'x'")
    assert back.dtype == array.dtype and back.shape == array.shape
    assert back.tolist() == array.tolist()


def test_bytes_elements_are_length_prefixed_as_triton_lays_them_out():
    assert oip.tensor_to_raw(np.array(["ab", "c"], dtype=object))[1] == b"\x02\x00\x00\x00ab\x01\x00\x00\x00c"


def test_a_binary_request_decodes_its_inputs_in_order_beside_json_ones():
    x, z = np.arange(8, dtype=np.float32).reshape(2, 4), np.array([1.5, 2.5])
    header = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "parameters": {"binary_data_size": 32}},
                         {"name": "j", "shape": [1], "datatype": "INT32", "data": [9]},
                         {"name": "z", "shape": [2], "datatype": "FP64", "parameters": {"binary_data_size": 16}}],
              "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}
    body, length = binary_body(header, x.tobytes(), z.tobytes())
    request = oip_binary.decode_request(body, length)
    assert np.array_equal(request.inputs["x"], x) and np.array_equal(request.inputs["z"], z)
    assert request.inputs["j"].tolist() == [9]
    assert request.binary_outputs(["y", "other"]) == ["y"]


@pytest.mark.parametrize(("parameters", "outputs", "binary"), [
    ({}, None, []),
    ({"binary_data_output": True}, None, ["y", "p"]),
    ({"binary_data_output": True}, [{"name": "y", "parameters": {"binary_data": False}}, {"name": "p"}], ["p"]),
    ({}, [{"name": "y", "parameters": {"binary_data": True}}, {"name": "p"}], ["y"]),
])
def test_outputs_go_binary_only_when_the_request_asks(parameters, outputs, binary):
    body = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}], "parameters": parameters}
    if outputs is not None:
        body["outputs"] = outputs
    assert oip.decode_request(body).binary_outputs(["y", "p"]) == binary


def test_a_binary_response_puts_the_raw_bytes_after_its_json_header():
    y = np.arange(6, dtype=np.float32).reshape(2, 3)
    body, length = oip_binary.encode_response("m", "2", {"y": y, "label": np.array([1])}, binary=["y"], id="r")
    header = json.loads(body[:length])
    assert header["outputs"][0] == {"name": "y", "shape": [2, 3], "datatype": "FP32",
                                    "parameters": {"binary_data_size": 24}}
    assert header["outputs"][1]["data"] == [1] and header["id"] == "r"
    assert np.array_equal(np.frombuffer(body[length:], np.float32).reshape(2, 3), y)


FOUR_FLOATS = np.zeros(4, np.float32).tobytes()


@pytest.mark.parametrize(("body", "length", "reason"), [
    (b'{"inputs": []}', "x12", "decimal byte count"),
    (b'{"inputs": []}', "\u00b2", "decimal byte count"),
    (b'{"inputs": []}', "999", "more than the 14-byte body"),
    (b'{"inputs": []}', "9" * 5000, "5000-digit number, more than the 14-byte body"),
    (b"\xff\xfe binary junk", "4", "inference header"),
    (binary_body(one_input([4], "FP32", 32), FOUR_FLOATS)[0], None, "more than the 16 bytes left"),
    (*binary_body(one_input([4], "FP32", 32), FOUR_FLOATS), "more than the 16 bytes left"),
    (*binary_body(one_input([4], "FP32", 12), FOUR_FLOATS), "needs 16 bytes, got 12"),
    (*binary_body(one_input([2], "FP32", 8), FOUR_FLOATS), "bytes after the last binary input"),
    (*binary_body(one_input([4], "FP32", -1), FOUR_FLOATS), "non-negative integer"),
    (*binary_body(one_input([4], "FP32", "16"), FOUR_FLOATS), "non-negative integer"),
    (*binary_body(one_input([2**40, 2**40], "FP32", 16), FOUR_FLOATS), "elements allowed"),
    (*binary_body(one_input([4], "FP99", 16), FOUR_FLOATS), "not one of"),
    (*binary_body(one_input([1], "BYTES", 8), struct.pack("<I", 2**31) + b"abcd"), "says 2147483648 bytes"),
    (*binary_body(one_input([2], "BYTES", 6), struct.pack("<I", 2) + b"ab"), "no 4-byte length"),
    (*binary_body(one_input([1], "BYTES", 7), struct.pack("<I", 1) + b"abc"), "2 bytes left after"),
    (*binary_body(one_input([1], "BYTES", 6), struct.pack("<I", 2) + b"\xff\xfe"), "not UTF-8"),
])
def test_lying_or_oversized_binary_lengths_are_refused_with_the_reason(body, length, reason):
    if length is None:  # binary_data_size without the header: the body is not JSON plus bytes
        body, length = body[:body.index(b"}}]}") + 4], None
        with pytest.raises(MessageError, match="no binary part"):
            oip_binary.decode_request(body, length)
        return
    with pytest.raises(MessageError, match=reason):
        oip_binary.decode_request(body, length)


def test_grpc_raw_contents_decode_through_the_same_checks():
    message = oip_grpc.encode_infer_request("m", 1, oip.InferenceRequest(inputs={"x": np.ones((2, 4), np.float32)}))
    assert oip_grpc.decode_infer_request(message).inputs["x"].shape == (2, 4)
    message.raw_input_contents[0] = message.raw_input_contents[0][:-4]
    with pytest.raises(MessageError, match="needs 32 bytes, got 28"):
        oip_grpc.decode_infer_request(message)
    message.raw_input_contents.append(b"")
    with pytest.raises(MessageError, match="1 inputs but 2 raw_input_contents"):
        oip_grpc.decode_infer_request(message)


def test_grpc_typed_contents_decode_like_json_data():
    message = oip_grpc.ModelInferRequest(model_name="m")
    tensor = message.inputs.add(name="x", datatype="FP32", shape=[2, 2])
    tensor.contents.fp32_contents.extend([1, 2, 3, 4])
    assert oip_grpc.decode_infer_request(message).inputs["x"].tolist() == [[1, 2], [3, 4]]
    tensor.shape[:] = [2, 3]
    with pytest.raises(MessageError, match="needs 6 values, got 4"):
        oip_grpc.decode_infer_request(message)


def test_grpc_typed_contents_that_lie_about_their_count_are_refused_before_becoming_python_values():
    message = oip_grpc.ModelInferRequest(model_name="m")
    message.inputs.add(name="x", datatype="BOOL", shape=[1]).contents.bool_contents.extend([True] * 1_000_000)
    tracemalloc.start()
    try:
        with pytest.raises(MessageError, match=r"shape \[1\] needs 1 values, got 1000000"):
            oip_grpc.decode_infer_request(message)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100_000, f"{peak} bytes held to refuse a 1 MB message"


def test_the_committed_grpc_descriptor_is_what_protoc_makes_of_the_proto():
    pytest.importorskip("grpc_tools", reason="grpcio-tools (the dev extra) regenerates the descriptor")
    assert grpc_descriptor.module_text(grpc_descriptor.descriptor_bytes()) == \
        grpc_descriptor.MODULE.read_text(encoding="utf-8"), "run `make grpc-descriptor` after editing the .proto"
