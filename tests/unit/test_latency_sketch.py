"""The latency sketch: quantiles merged over devices stay within the stated 1 % of the samples' own."""

from __future__ import annotations

import numpy as np
import pytest

from edgefleet_runtime.request_stats import Stats
from fleet_protocol import sketch
from fleet_protocol.errors import MessageError


def device_sketches(samples_ns: np.ndarray, devices: int) -> list[dict]:
    """Each device counts its share of the samples as the agent's hot path does, and encodes them for telemetry."""
    encoded = []
    for share in np.array_split(samples_ns, devices):
        stats = Stats()
        for ns in share.tolist():
            stats.buckets[sketch.key_of(ns)] += 1
        bins, _ = stats.take()
        encoded.append(sketch.encode_bins(bins))
    return encoded


@pytest.mark.parametrize("shape", ["lognormal", "bimodal"])
def test_p99_merged_over_devices_is_within_the_stated_relative_error_of_numpy_percentile(shape):
    rng = np.random.default_rng(7)
    if shape == "lognormal":
        samples = rng.lognormal(mean=12.5, sigma=0.8, size=60_000)  # around 270 µs, a long tail
    else:  # a fast path and a slow one: the quantiles fall in the gap, where coarse buckets are worst
        samples = np.concatenate([rng.normal(300_000, 20_000, 54_000), rng.normal(5_100_000, 300_000, 6_000)])
    samples = np.maximum(samples, 1).astype(np.int64)
    merged = sketch.Sketch()
    for doc in device_sketches(samples, devices=7):
        merged.merge(sketch.parse(doc))
    assert merged.total == len(samples)
    for q in (0.50, 0.95, 0.99):
        exact = np.percentile(samples, q * 100, method="lower")  # the sample at rank floor(q * (n - 1))
        estimate = merged.quantile(q)
        assert abs(estimate - exact) <= sketch.ALPHA * exact, (q, estimate, exact)
        interpolated = np.percentile(samples, q * 100)  # NumPy's default: between two neighbouring samples
        assert abs(estimate - interpolated) <= sketch.ALPHA * interpolated * 1.01, (q, estimate, interpolated)


def test_merging_sketches_gives_the_same_quantiles_as_one_sketch_of_all_samples():
    samples = np.random.default_rng(3).lognormal(11, 1.2, 20_000).astype(np.int64) + 1
    one, merged = sketch.Sketch(), sketch.Sketch()
    one.merge(sketch.parse(device_sketches(samples, 1)[0]))
    for doc in device_sketches(samples, 5):
        merged.merge(sketch.parse(doc))
    assert [one.quantile(q) for q in (0.5, 0.95, 0.99)] == [merged.quantile(q) for q in (0.5, 0.95, 0.99)]


def test_every_duration_the_clock_can_give_has_a_bucket():
    assert sketch.key_of(0) == sketch.key_of(1) == 0
    assert sketch.key_of(2**63 - 1) < sketch.KEYS == len(Stats().buckets)
    for ns in (1, 999, 1_000, 123_456, 10**9, 10**12):
        assert abs(sketch.value_of(sketch.key_of(ns)) - ns) <= sketch.ALPHA * ns


def test_an_empty_sketch_has_no_quantile():
    assert sketch.Sketch().quantile(0.99) is None


@pytest.mark.parametrize("doc, field", [
    ({"alpha_ppm": 20_000, "unit": "ns", "bins": []}, "alpha_ppm"),
    ({"alpha_ppm": sketch.ALPHA_PPM, "unit": "us", "bins": []}, "alpha_ppm"),
    ({"alpha_ppm": sketch.ALPHA_PPM, "unit": "ns", "bins": {"1": 2}}, "bins must be a list"),
    ({"alpha_ppm": sketch.ALPHA_PPM, "unit": "ns", "bins": [[sketch.KEYS, 1]]}, "is not \\[key"),
    ({"alpha_ppm": sketch.ALPHA_PPM, "unit": "ns", "bins": [[3, -1]]}, "is not \\[key"),
    ({"alpha_ppm": sketch.ALPHA_PPM, "unit": "ns", "bins": [[3, 2**70]]}, "is not \\[key"),
    ({"alpha_ppm": sketch.ALPHA_PPM, "unit": "ns", "bins": [[3, True]]}, "is not \\[key"),
    ([], "alpha_ppm"),
])
def test_a_malformed_sketch_is_refused_naming_what_is_wrong(doc, field):
    with pytest.raises(MessageError, match=field):
        sketch.parse(doc)
