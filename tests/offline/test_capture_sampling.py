"""Capture sampling: a fraction of requests, capped per minute and in size; bad capture records are refused."""

from __future__ import annotations

import numpy as np
import pytest

from edgefleet_runtime.capture import CaptureSampler
from fleet_protocol.captures import decode_capture, encode_capture
from fleet_protocol.errors import MessageError


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_fraction_and_the_per_minute_cap_limit_what_is_captured():
    draws = iter([0.05, 0.5, 0.01, 0.02, 0.03] * 10)
    clock = Clock()
    sampler = CaptureSampler({"fraction_percent": 10, "max_per_minute": 2}, rng=lambda: next(draws), clock=clock)
    assert [sampler.sample() for _ in range(5)] == [True, False, True, False, False]
    clock.now = 60.0
    assert sampler.sample() is True


def test_nothing_is_captured_by_default_and_large_samples_do_not_fit():
    assert not CaptureSampler({}).sample()
    assert not CaptureSampler({"max_bytes": 100}).fits(101)


@pytest.mark.parametrize("config", [{"fraction_percent": 0.5}, {"fraction_percent": 101}, {"max_bytes": 10**9}])
def test_a_bad_capture_config_is_refused(config):
    with pytest.raises(MessageError):
        CaptureSampler(config)


def test_captured_tensors_round_trip_exactly_without_floats_on_the_wire():
    x = np.array([[0.1, 1e-30, -2.5, np.pi]], np.float32)
    labels = np.array(["setosa"], dtype=object)
    data = encode_capture(model="iris", version=2, accelerator="cpu", scored_on="local", inputs={"x": x},
                          outputs={"label": labels})
    assert "float" not in str({type(v).__name__ for t in data["inputs"] for v in t.values()})
    capture = decode_capture(data)
    assert capture.inputs["x"].dtype == np.float32 and np.array_equal(capture.inputs["x"], x)
    assert capture.outputs["label"].tolist() == ["setosa"]


def test_a_capture_whose_bytes_do_not_match_its_shape_is_refused():
    data = encode_capture(model="m", version=1, accelerator="", scored_on="local",
                          inputs={"x": np.ones((2, 2), np.float32)}, outputs={})
    data["inputs"][0]["shape"] = [3, 2]
    with pytest.raises(MessageError, match="bytes"):
        decode_capture(data)
