"""The pure decisions: where a request is scored, and whether the cloud may be tried."""

from __future__ import annotations

import pytest

from edge_agent import fallback
from edge_agent.fallback import CLOUD, LOCAL, CircuitBreaker, FallbackPolicy
from fleet_protocol.errors import MessageError

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
