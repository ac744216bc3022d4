"""The agent's ``GET /metrics``: counts since start that survive the telemetry's reports, read at scrape time."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge_agent.installer import Installer
from edge_agent.metrics import Version, latency_histogram
from edge_agent.offload import Offload
from edge_agent.outbox import Outbox
from edgefleet_runtime.inputs import InferenceError
from edgefleet_runtime.request_stats import Stats
from edgefleet_runtime.runtime import Runtime
from fleet_protocol import sketch
from firmware_profiles import load_profile
from fleet_server.keys import new_signing_key
from tests.agent.helpers import make_bundle, stage

X = np.ones((1, 4), np.float32)


def samples_of(text: str) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def test_stats_totals_keep_what_the_telemetry_already_took():
    stats = Stats()
    stats.buckets[sketch.key_of(40_000)] += 3
    stats.errors[0] += 1
    bins, errors = stats.take()  # the heartbeat's report
    assert (bins, errors) == ([[sketch.key_of(40_000), 3]], 1)
    stats.buckets[sketch.key_of(2_000_000)] += 2
    totals, errors = stats.totals()
    assert (sum(totals), errors) == (5, 1)
    assert (totals[sketch.key_of(40_000)], totals[sketch.key_of(2_000_000)]) == (3, 2)
    assert stats.take()[0] == [[sketch.key_of(2_000_000), 2]]  # reading the totals took nothing from the telemetry
    stats.buckets[sketch.key_of(40_000)] += 1
    stats.take()
    assert stats.totals()[0][sketch.key_of(40_000)] == 4  # each take adds to what earlier ones took


def test_health_check_requests_count_in_neither_the_telemetry_nor_the_metrics(tmp_path):
    bundle = make_bundle(new_signing_key(), sample=True)  # the sample request is scored once at load
    stage(tmp_path, bundle)
    loaded = Runtime(load_profile("generic-cpu")).load(Installer(tmp_path).install(bundle.manifest, bundle.envelope))
    assert loaded.stats.totals() == ([0] * sketch.KEYS, 0)
    assert loaded.stats.take() == ([], 0)


def test_latency_histogram_counts_each_request_in_the_bucket_of_its_duration():
    buckets = [0] * sketch.KEYS
    for ns, n in ((30_000, 3), (2_000_000, 2), (20_000_000_000, 1)):  # 30 µs, 2 ms, 20 s
        buckets[sketch.key_of(ns)] += n
    histogram = latency_histogram([Version("iris", 2, "CPUExecutionProvider", "onnxruntime_onnx", buckets, 0)])
    got = {(s.name, s.labels.get("le")): s.value for s in histogram.samples}
    assert got[("edgefleet_agent_request_duration_seconds_bucket", "2.5e-05")] == 0
    assert got[("edgefleet_agent_request_duration_seconds_bucket", "5e-05")] == 3
    assert got[("edgefleet_agent_request_duration_seconds_bucket", "0.001")] == 3
    assert got[("edgefleet_agent_request_duration_seconds_bucket", "0.0025")] == 5
    assert got[("edgefleet_agent_request_duration_seconds_bucket", "10.0")] == 5
    assert got[("edgefleet_agent_request_duration_seconds_bucket", "+Inf")] == 6
    assert got[("edgefleet_agent_request_duration_seconds_count", None)] == 6
    assert got[("edgefleet_agent_request_duration_seconds_sum", None)] == pytest.approx(3 * 30e-6 + 2 * 2e-3 + 20,
                                                                                       rel=sketch.ALPHA)


def test_outbox_drops_are_totalled_beside_what_the_heartbeat_takes(tmp_path):
    box = Outbox(tmp_path / "agent.db", max_records=10)
    box.add_many([("heartbeat", {"n": i}) for i in range(14)])
    assert box.take_dropped_by_class() == {"telemetry": 4}
    box.add_many([("heartbeat", {"n": i}) for i in range(3)])
    assert box.take_dropped_by_class() == {"telemetry": 3}
    assert box.dropped_total == {"telemetry": 7}


def test_fallbacks_are_totalled_beside_what_the_heartbeat_takes(tmp_path):
    offload = Offload(client=None, outbox=Outbox(tmp_path / "agent.db"))
    offload.count("iris", "batch_too_large", "cloud")
    assert offload.take_records()[0][1]["reasons"] == {"batch_too_large": {"cloud": 1}}
    offload.count("iris", "batch_too_large", "cloud")
    offload.count("iris", "latency_over_slo", "local")
    assert offload.fallbacks_total == {("iris", "batch_too_large", "cloud"): 2,
                                       ("iris", "latency_over_slo", "local"): 1}


def test_metrics_on_the_scoring_port_report_each_module_version_since_it_was_loaded(server, make_agent):
    agent = make_agent()
    bundle = server.bundle(version=3, sample=True)
    server.publish_desired(agent.device_id, 1, [bundle])
    server.wait_running(agent.device_id, "linear", 3)
    for _ in range(3):
        agent.infer("linear", {"x": X})
    agent.telemetry.heartbeat()  # the telemetry takes its report: the metrics must not lose it
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    for _ in range(2):
        assert httpx.post(f"{agent.scoring_url}/v2/models/linear/infer", json=body).status_code == 200
    with pytest.raises(InferenceError):
        agent.infer("linear", {"x": np.ones((1, 5), np.float32)})

    response = httpx.get(f"{agent.scoring_url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples = samples_of(response.text)
    module = {"module": "linear", "version": "3"}
    assert value(samples, "edgefleet_agent_requests_total", **module) == 6  # errors are requests too
    assert value(samples, "edgefleet_agent_request_errors_total", **module) == 1
    assert value(samples, "edgefleet_agent_request_duration_seconds_count", **module) == 5  # only answers are timed
    assert value(samples, "edgefleet_agent_request_duration_seconds_bucket", le="+Inf", **module) == 5
    assert value(samples, "edgefleet_agent_module_info", accelerator="CPUExecutionProvider",
                 platform="onnxruntime_onnx", **module) == 1
    assert value(samples, "edgefleet_agent_broker_connected") == 1
    assert value(samples, "edgefleet_agent_outbox_limit_bytes") == agent.config.outbox_max_bytes
    assert value(samples, "process_resident_memory_bytes") > 50 * 1024**2
    assert httpx.post(f"{agent.scoring_url}/metrics").status_code == 405


def test_an_agent_nobody_scrapes_does_not_load_prometheus_client():
    """The agent's idle memory is a benchmark (B5): the metrics library comes in at the first scrape only."""
    code = "import sys, edge_agent.agent, edgefleet_cli.main; print('prometheus_client' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert result.stdout.strip() == "False", result.stdout + result.stderr
