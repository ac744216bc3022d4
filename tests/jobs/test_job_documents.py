"""The job contract and its trust checks (pure: no broker, no I/O), the staging rule and the log ring."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import pytest

from edge_agent.log_ring import LogRing
from fleet_protocol.errors import ExpiredError, MessageError, SignatureError
from fleet_protocol.jobs import MAX_LOG_BYTES, MAX_RESULT_BYTES, JobDocument, check_params, parse_result
from fleet_protocol.signing import SigningKey, sign_envelope
from fleet_protocol.timestamps import to_iso
from fleet_protocol.trust import TrustedState
from fleet_server.jobs import due

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
SERVER = SigningKey.from_seed(b"s" * 32)


def envelope(key: SigningKey = SERVER, *, device: str = "dev-1", kind: str = "diagnostics", params=None,
             expires: datetime = NOW + timedelta(hours=1)) -> dict:
    doc = JobDocument("job-1", device, kind, params or {}, to_iso(NOW - timedelta(seconds=5)), to_iso(expires))
    return sign_envelope(doc.to_dict(), key)


def trust() -> TrustedState:
    return TrustedState("dev-1", [SERVER.public_key])


def test_job_signed_by_the_trusted_key_for_this_device_is_accepted():
    job = trust().verify_job(envelope(params={"module": "scaler"}, kind="restart_module"), now=NOW)
    assert (job.job_id, job.kind, job.params) == ("job-1", "restart_module", {"module": "scaler"})


def test_job_signed_by_an_untrusted_key_is_refused():
    with pytest.raises(SignatureError, match="untrusted key"):
        trust().verify_job(envelope(SigningKey.from_seed(b"f" * 32)), now=NOW)


def test_job_signed_by_a_rotated_out_key_is_refused():
    state, rotated = trust(), SigningKey.from_seed(b"r" * 32)
    state.set_keys([rotated.public_key])
    with pytest.raises(SignatureError, match="untrusted key"):
        state.verify_job(envelope(SERVER), now=NOW)
    assert state.verify_job(envelope(rotated), now=NOW).job_id == "job-1"


def test_job_for_another_device_is_refused():
    with pytest.raises(SignatureError) as refused:
        trust().verify_job(envelope(device="dev-2"), now=NOW)
    assert refused.value.code == "wrong_device"


def test_expired_job_is_refused():
    with pytest.raises(ExpiredError):
        trust().verify_job(envelope(expires=NOW - timedelta(seconds=1)), now=NOW)


def test_tampered_job_is_refused():
    tampered = envelope()
    tampered["signed"]["kind"] = "flush_outbox"
    with pytest.raises(SignatureError, match="does not verify"):
        trust().verify_job(tampered, now=NOW)


@pytest.mark.parametrize(("kind", "params", "reason"), [
    ("shell", {}, "not one of"),
    ("diagnostics", {"cmd": "rm -rf /"}, "unknown field 'cmd'"),
    ("restart_module", {}, "missing field 'module'"),
    ("restart_module", {"module": "../etc"}, "must match"),
    ("collect_logs", {"max_bytes": MAX_LOG_BYTES + 1}, "at most"),
    ("collect_logs", {"path": "/etc/shadow"}, "unknown field 'path'"),
])
def test_job_kinds_are_a_fixed_set_with_bounded_params(kind, params, reason):
    with pytest.raises(MessageError, match=reason):
        check_params(kind, params)


def test_failed_result_must_say_why():
    result = {"job_id": "job-1", "kind": "diagnostics", "state": "failed", "result": {}, "started": "x",
              "finished": "y"}
    with pytest.raises(MessageError, match="needs an error"):
        parse_result(result)


def test_rate_limit_admits_one_device_at_the_start_then_one_per_interval():
    assert due(None, 0, sent=0, queued=5) == 5
    assert [due(2, t, sent=0, queued=5) for t in (0, 29.9, 30, 59.9, 60)] == [1, 1, 2, 2, 3]
    assert due(2, 30, sent=2, queued=3) == 0 and due(2, 600, sent=2, queued=3) == 3


def test_log_ring_keeps_the_newest_lines_within_its_byte_cap():
    ring = LogRing(max_bytes=1000)
    logger = logging.getLogger("edgefleet.test.ring")
    logger.addHandler(ring)
    try:
        for i in range(100):
            logger.warning("line %03d %s", i, "x" * 40)
    finally:
        logger.removeHandler(ring)
    assert ring.size_bytes <= 1000 and ring.dropped > 0
    tail = ring.tail(300)
    assert len(tail.encode()) <= 300 and tail.rstrip().endswith("x") and "line 099" in tail and "line 000" not in tail


def test_log_ring_cuts_a_long_line_between_characters_never_inside_one():
    ring = LogRing()
    logger = logging.getLogger("edgefleet.test.ring")
    logger.addHandler(ring)
    try:
        for pad in ("", "a", "ab"):  # one of the three cuts lands inside a three-byte character
            logger.warning("%s%s", pad, "€" * 1000)
    finally:
        logger.removeHandler(ring)
    text = ring.tail(ring.size_bytes)
    assert "\ufffd" not in text and len(text.encode()) == ring.size_bytes, "the bytes the ring counts are the text's"


def test_job_result_over_its_byte_cap_is_refused():
    result = {"job_id": "job-1", "kind": "collect_logs", "state": "succeeded", "started": "2026-01-01T00:00:00Z",
              "finished": "2026-01-01T00:00:01Z", "result": {"text": "x" * MAX_RESULT_BYTES}}
    with pytest.raises(MessageError, match=f"more than {MAX_RESULT_BYTES}"):
        parse_result(result)
    parse_result({**result, "result": {"text": "x" * MAX_LOG_BYTES, "bytes": MAX_LOG_BYTES}})


def test_succeeded_result_must_carry_what_the_cli_and_dashboard_show():
    diagnostics = {"providers": ["CPUExecutionProvider"], "memory": {"total_bytes": 8, "available_bytes": 4},
                   "disk": {"free_bytes": 2}, "versions": {"agent": "0.1.0"}, "clock_skew_s": 0}
    result = {"job_id": "job-1", "kind": "diagnostics", "state": "succeeded", "started": "2026-01-01T00:00:00Z",
              "finished": "2026-01-01T00:00:01Z", "result": diagnostics}
    assert parse_result(result).result == diagnostics
    with pytest.raises(MessageError, match="memory"):
        parse_result({**result, "result": {**diagnostics, "memory": "plenty"}})
    with pytest.raises(MessageError, match="'text'"):
        parse_result({**result, "kind": "collect_logs", "result": {"bytes": 3}})


def test_job_result_times_must_be_timestamps():
    result = {"job_id": "job-1", "kind": "diagnostics", "state": "succeeded", "started": "2026-01-01T00:00:00Z",
              "finished": "<img src=x onerror=alert(1)>"}
    with pytest.raises(MessageError, match="finished"):
        parse_result(result)
