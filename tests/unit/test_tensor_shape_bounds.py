"""Every tensor dimension is bounded before numpy sees the shape, in both tensor codecs.

A shape with a zero in it has no elements, so a bound on the product alone lets
``[0, 2**70]`` through to numpy, which then raises its own ValueError. The rule:
each dimension, and the product of the non-zero ones, is at most
``oip.MAX_ELEMENTS``, and there are at most ``oip.MAX_DIMS`` dimensions; anything
else is a MessageError (``malformed_message``) naming the tensor.
"""

from __future__ import annotations

import numpy as np
import pytest

from fleet_protocol import oip
from fleet_protocol.captures import decode_capture, encode_capture
from fleet_protocol.errors import MessageError

HUGE_SHAPES = [
    pytest.param([0, 2**70], id="one-dimension-past-int64"),
    pytest.param([0, 2**62, 2**62], id="dimensions-whose-product-is-too-big"),
    pytest.param([0, oip.MAX_ELEMENTS + 1], id="one-dimension-just-past-the-limit"),
    pytest.param([0, 4_000, 4_001], id="non-zero-product-just-past-the-limit"),
    pytest.param([0] + [1] * 70, id="more-dimensions-than-numpy-has"),
]


def oip_body(shape: list[int]) -> dict:
    return {"inputs": [{"name": "x", "shape": shape, "datatype": "FP32", "data": []}]}


def capture_with(shape: list[int], datatype: str = "FP32") -> dict:
    data = encode_capture(model="m", version=1, accelerator="", scored_on="local",
                          inputs={"x": np.ones((1, 1), np.float32)}, outputs={})
    tensor = {"name": "x", "datatype": datatype, "shape": shape}
    tensor.update({"strings": []} if datatype == "BYTES" else {"b64": ""})
    return {**data, "inputs": [tensor]}


@pytest.mark.parametrize("shape", HUGE_SHAPES)
def test_an_oip_tensor_shape_past_the_bounds_is_a_malformed_message(shape):
    with pytest.raises(MessageError, match="input 'x': shape") as info:
        oip.decode_request(oip_body(shape))
    assert info.value.code == "malformed_message"
    with pytest.raises(MessageError, match="output 'y': shape"):
        oip.decode_response({"outputs": [{"name": "y", "shape": shape, "datatype": "FP32", "data": []}]})


@pytest.mark.parametrize("datatype", ["FP32", "BYTES"])
@pytest.mark.parametrize("shape", HUGE_SHAPES)
def test_a_captured_tensor_shape_past_the_bounds_is_a_malformed_message(shape, datatype):
    with pytest.raises(MessageError, match="captured input 'x': shape") as info:
        decode_capture(capture_with(shape, datatype))
    assert info.value.code == "malformed_message"


@pytest.mark.parametrize("shape", [[0, oip.MAX_ELEMENTS], [0, 4_000, 4_000], [0] * oip.MAX_DIMS])
def test_empty_tensors_at_the_bounds_are_accepted(shape):
    assert oip.decode_request(oip_body(shape)).inputs["x"].shape == tuple(shape)
    assert decode_capture(capture_with(shape)).inputs["x"].shape == tuple(shape)
