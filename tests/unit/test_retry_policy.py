"""The one retry policy (fleet_protocol.retry): which failures are retried, for which calls, how long to wait."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from fleet_protocol.retry import LOST, NOT_SENT, RetryPolicy, is_idempotent, retry_after_s

POLICY = RetryPolicy(attempts=3, base_delay_s=0.5, max_delay_s=4.0)
NOW = datetime(2026, 12, 3, 12, 0, 0, tzinfo=timezone.utc)


def test_a_connection_never_made_is_retried_even_for_a_post_that_is_not_idempotent():
    assert POLICY.after_failure(1, NOT_SENT, idempotent=False, draw=0.5) == 0.25


def test_a_connection_lost_after_sending_is_retried_only_for_an_idempotent_call():
    assert POLICY.after_failure(1, LOST, idempotent=True, draw=0.5) == 0.25
    assert POLICY.after_failure(1, LOST, idempotent=False, draw=0.5) is None


@pytest.mark.parametrize("status", [502, 503, 504])
def test_gateway_and_unavailable_answers_are_retried_for_idempotent_calls_only(status):
    assert POLICY.after_status(1, status, idempotent=True, draw=0.0) == 0.0
    assert POLICY.after_status(1, status, idempotent=False, draw=0.0) is None


@pytest.mark.parametrize("status", [200, 400, 401, 404, 409, 413, 500, 501])
def test_other_answers_are_never_retried(status):
    assert POLICY.after_status(1, status, idempotent=True, draw=0.5) is None


def test_the_attempt_bound_counts_the_first_try():
    assert POLICY.after_failure(2, NOT_SENT, idempotent=True, draw=0.5) is not None
    assert POLICY.after_failure(3, NOT_SENT, idempotent=True, draw=0.5) is None
    assert POLICY.after_status(3, 503, idempotent=True, draw=0.5) is None
    assert RetryPolicy(attempts=1).after_failure(1, NOT_SENT, idempotent=True, draw=0.5) is None


def test_backoff_is_full_jitter_under_a_doubling_ceiling_capped_at_max_delay():
    policy = RetryPolicy(attempts=10, base_delay_s=0.5, max_delay_s=4.0)
    ceilings = [policy.after_failure(n, NOT_SENT, idempotent=True, draw=0.999999) for n in range(1, 7)]
    assert ceilings == pytest.approx([0.5, 1.0, 2.0, 4.0, 4.0, 4.0], rel=1e-5)
    assert policy.after_failure(3, NOT_SENT, idempotent=True, draw=0.0) == 0.0, "full jitter reaches zero"
    assert policy.after_failure(3, NOT_SENT, idempotent=True, draw=0.25) == 0.5


def test_retry_after_is_obeyed_with_a_little_jitter_and_a_longer_one_ends_the_retries():
    assert POLICY.after_status(1, 503, idempotent=True, draw=0.5, retry_after=2.0) == 2.25
    assert POLICY.after_status(1, 503, idempotent=True, draw=0.0, retry_after=4.0) == 4.0
    assert POLICY.after_status(1, 503, idempotent=True, draw=0.0, retry_after=30.0) is None


def test_retry_after_reads_seconds_and_http_dates():
    assert retry_after_s("7", now=NOW) == 7.0
    later = (NOW + timedelta(seconds=90)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert retry_after_s(later, now=NOW) == 90.0
    earlier = (NOW - timedelta(seconds=90)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert retry_after_s(earlier, now=NOW) == 0.0, "a date in the past: no wait"


@pytest.mark.parametrize("value", [None, "", "soon", "-3", "1.5", "٣"])
def test_an_absent_or_unreadable_retry_after_is_ignored(value):
    assert retry_after_s(value, now=NOW) is None


def test_idempotent_calls_are_named_by_method_or_declared_by_the_caller():
    assert all(is_idempotent(m) for m in ("GET", "get", "HEAD", "OPTIONS", "PUT", "DELETE"))
    assert not is_idempotent("POST") and not is_idempotent("PATCH")
    assert is_idempotent("POST", declared=True)


def test_a_policy_that_could_not_work_is_refused():
    with pytest.raises(ValueError, match="attempts >= 1"):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(base_delay_s=2.0, max_delay_s=1.0)
