"""The pure decisions: where a request is scored, and whether the cloud may be tried."""

from __future__ import annotations

import pytest

from edgefleet_runtime import fallback
from edgefleet_runtime.fallback import CLOUD, LOCAL, CircuitBreaker, FallbackPolicy
from fleet_protocol.errors import MessageError
from fleet_server.keys import new_signing_key

POLICY = FallbackPolicy(max_batch=64, max_request_bytes=1_000, max_queue=4, latency_slo_ms=200,
                        on_accelerator_failure=True)


def test_small_request_on_an_installed_model_stays_local():
    assert POLICY.decide(installed=True, rows=1, request_bytes=100, inflight=0, latency_ms=5.0).where == LOCAL


@pytest.mark.parametrize("situation, reason", [
    ({"installed": False}, fallback.NOT_INSTALLED),
    ({"installed": True, "prefer": "cloud"}, fallback.CALLER_PREFERS_CLOUD),
    ({"installed": True, "rows": 65}, fallback.BATCH_TOO_LARGE),
    ({"installed": True, "request_bytes": 1_001}, fallback.REQUEST_TOO_LARGE),
    ({"installed": True, "inflight": 4}, fallback.QUEUE_FULL),
    ({"installed": True, "latency_ms": 250.0}, fallback.LATENCY_OVER_SLO),
    ({"installed": True, "accelerator_failed": True}, fallback.ACCELERATOR_FAILED),
])
def test_each_limit_sends_the_request_to_the_cloud_with_its_reason(situation, reason):
    decision = POLICY.decide(**situation)
    assert (decision.where, decision.reason) == (CLOUD, reason)


def test_a_policy_without_limits_never_leaves_the_device_for_an_installed_model():
    assert FallbackPolicy().decide(installed=True, rows=10**6, request_bytes=10**9, inflight=10**3,
                                   latency_ms=10**4, accelerator_failed=True).where == LOCAL


def test_desired_state_overrides_single_keys_of_the_manifest_policy():
    policy = FallbackPolicy.from_configs({"fallback": {"max_batch": 8, "target": "iris"}}, {"max_batch": 128})
    assert (policy.max_batch, policy.target) == (128, "iris")


@pytest.mark.parametrize("raw", [{"max_batch": -1}, {"max_batch": 1.5}, {"bogus": 1}, {"target": 3},
                                 {"on_accelerator_failure": 1}])
def test_a_bad_policy_is_refused_naming_the_key(raw):
    with pytest.raises(MessageError, match="fallback"):
        FallbackPolicy.from_configs({"fallback": raw})


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_consecutive_failures_and_half_opens_after_the_cooldown():
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=3, cooldown_s=10, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state == CircuitBreaker.CLOSED
    breaker.record_failure()
    assert breaker.state == CircuitBreaker.OPEN and not breaker.allow()
    clock.now = 9.9
    assert not breaker.allow() and breaker.retry_in_s() == pytest.approx(0.1)
    clock.now = 10.0
    assert breaker.allow() and breaker.state == CircuitBreaker.HALF_OPEN
    assert not breaker.allow(), "only one trial request while half open"
    breaker.record_success()
    assert breaker.state == CircuitBreaker.CLOSED and breaker.allow()


def test_a_failed_trial_opens_the_breaker_again_for_a_full_cooldown():
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=5, clock=clock)
    breaker.record_failure()
    clock.now = 5.0
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state == CircuitBreaker.OPEN
    clock.now = 9.0
    assert not breaker.allow()


def test_a_success_resets_the_failure_count():
    breaker = CircuitBreaker(failure_threshold=2, clock=FakeClock())
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state == CircuitBreaker.CLOSED


def test_a_misspelt_policy_key_is_refused_naming_the_nearest_valid_key():
    with pytest.raises(MessageError, match="'max_bach'.*'max_batch'"):
        FallbackPolicy.from_configs({"fallback": {"max_bach": 64}})


# --- latency SLO: probes bring requests back once the device is fast again ----------------------------


def test_latency_slo_fallback_probes_locally_and_recovers():
    clock = FakeClock()
    average = fallback.LatencyAverage(probe_every=5, probe_interval_s=60, clock=clock)
    policy = FallbackPolicy(latency_slo_ms=100)

    def where() -> str:
        return policy.decide(installed=True, latency_ms=average.probe(policy.latency_slo_ms)).where

    average.add(500.0)  # the device was slow
    decisions = [where() for _ in range(10)]
    assert decisions == [CLOUD] * 4 + [LOCAL] + [CLOUD] * 4 + [LOCAL], "one request in probe_every stays local"
    for _ in range(60):  # each probe is fast: the average follows
        if where() == LOCAL:
            average.add(5.0)
    assert average.value < 100 and [where() for _ in range(3)] == [LOCAL] * 3, "back to local for good"


def test_latency_slo_fallback_probes_after_the_interval_too():
    clock = FakeClock()
    average = fallback.LatencyAverage(probe_every=1000, probe_interval_s=2.0, clock=clock)
    average.add(500.0)
    assert average.probe(100) == 500.0
    clock.now = 2.0
    assert average.probe(100) is None, "a probe once the interval has passed"
    assert average.probe(100) == 500.0, "then the interval starts again"
    assert average.probe(None) == 500.0 and average.probe(1000) == 500.0, "no SLO, or under it: never a probe"


# --- on_accelerator_failure on the real profiles with the real onnxruntime wheel ----------------------


def _offload_decision(tmp_path, profile, config: dict, *, rows: int = 1, overrides: dict | None = None):
    from edge_agent.cloud_client import CloudClient
    from edge_agent.installer import Installer
    from edge_agent.offload import Offload
    from edge_agent.outbox import Outbox
    from edgefleet_runtime.runtime import Runtime
    from tests.agent.helpers import make_bundle, stage

    bundle = make_bundle(new_signing_key(), config=config)
    stage(tmp_path, bundle)
    loaded = Runtime(profile).load(Installer(tmp_path).install(bundle.manifest, bundle.envelope))
    offload = Offload(client=CloudClient("http://127.0.0.1:9", token=None), outbox=Outbox(tmp_path / "outbox.db"),
                      overrides=lambda: overrides or {})
    return loaded, offload.decide("linear", loaded, rows=rows, request_bytes=100, prefer=None)


@pytest.mark.parametrize("board", ["raspberry-pi-5", "jetson-orin-nano"])
def test_on_accelerator_failure_keeps_requests_local_when_the_preferred_provider_is_not_in_the_build(tmp_path,
                                                                                                     board):
    from firmware_profiles import load_profile

    loaded, decision = _offload_decision(tmp_path, load_profile(board),
                                         {"fallback": {"on_accelerator_failure": True}})
    assert loaded.accelerator == "CPUExecutionProvider"
    assert decision.where == LOCAL, "offline first: a provider missing from the wheel is not a failure"


def test_on_accelerator_failure_sends_to_the_cloud_only_for_a_present_provider_that_failed(tmp_path):
    import dataclasses

    import onnxruntime as ort

    from firmware_profiles import load_profile
    from fleet_protocol.profiles import ExecutionProvider

    azure = "AzureExecutionProvider"
    if azure not in ort.get_available_providers():
        pytest.skip("no AzureExecutionProvider in this onnxruntime build")
    profile = dataclasses.replace(load_profile("generic-cpu"), onnx_providers=(
        ExecutionProvider(azure, {}), ExecutionProvider("CPUExecutionProvider", {})))
    policy = {"on_accelerator_failure": True}
    _, decision = _offload_decision(tmp_path / "a", profile, {"fallback": policy})
    assert (decision.where, decision.reason) == (CLOUD, fallback.ACCELERATOR_FAILED)
    _, decision = _offload_decision(tmp_path / "b", profile,
                                    {"fallback": policy, "accelerators": ["CPUExecutionProvider"]})
    assert decision.where == LOCAL, "the module's own accelerator order is honoured"


def test_a_misspelt_desired_state_override_is_refused_and_the_module_policy_still_applies(tmp_path):
    from firmware_profiles import load_profile

    _, decision = _offload_decision(tmp_path, load_profile("generic-cpu"), {"fallback": {"max_batch": 2}}, rows=5,
                                    overrides={"linear": {"max_bach": 8}})
    assert (decision.where, decision.reason) == (CLOUD, fallback.BATCH_TOO_LARGE)
