"""The agent's job store on its real SQLite file: a job id is claimed once, across restarts of the agent."""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import replace
from datetime import timedelta

from edge_agent.clock import utc_now
from edge_agent.job_kinds import JobContext
from edge_agent.jobs import JobRunner, JobStore
from edge_agent.log_ring import LogRing
from edge_agent.mqtt_link import RefusalCount
from edge_agent.outbox import Outbox
from fleet_protocol.canonical import canonical_json
from fleet_protocol.jobs import MAX_LOG_BYTES, MAX_RESULT_BYTES, RESULT_KIND, JobDocument, JobResult
from fleet_protocol.signing import SigningKey, sign_envelope
from fleet_protocol.timestamps import from_iso, to_iso
from fleet_protocol.trust import TrustedState
from tests.support.net import wait_for

JOB = JobDocument("job-1", "dev-1", "diagnostics", {}, "2026-01-01T00:00:00Z", "2099-01-01T00:00:00Z")


def test_a_job_id_is_claimed_once_and_then_answers_its_stored_result(tmp_path):
    store = JobStore(tmp_path / "agent.db")
    assert store.claim(JOB) == (True, None)
    assert store.claim(JOB) == (False, None), "claimed, not finished: a redelivery is ignored"
    result = JobResult("job-1", "diagnostics", "succeeded", {"providers": ["CPUExecutionProvider"]}, None, "a", "b")
    store.finish(result)
    store.close()
    reopened = JobStore(tmp_path / "agent.db")  # the agent restarted
    assert reopened.claim(JOB) == (False, result.to_dict())


def test_a_job_the_agent_died_running_is_answered_interrupted_not_run_again(tmp_path):
    JobStore(tmp_path / "agent.db").claim(JOB)  # claimed, then the agent died before it finished
    outbox = Outbox(tmp_path / "agent.db")
    store = JobStore(tmp_path / "agent.db")
    runner = JobRunner(trust=None, store=store, outbox=outbox, context=None, refusals=RefusalCount(),
                       on_malformed=lambda topic: None)
    runner.start()
    try:
        sent = [json.loads(r.data_json) for r in outbox.pending_stored(10) if r.kind == RESULT_KIND]
        assert [(r["job_id"], r["state"], r["error"]["code"]) for r in sent] == [("job-1", "failed", "job_interrupted")]
        assert runner.executed == 0 and store.unsent() == []
        assert store.claim(JOB)[1]["error"]["code"] == "job_interrupted"
    finally:
        runner.stop()
        store.close()
        outbox.close()


def test_a_result_larger_than_the_server_takes_is_answered_result_too_large(tmp_path):
    key = SigningKey.from_seed(b"s" * 32)
    now = utc_now()
    job = JobDocument("job-logs", "dev-1", "collect_logs", {"max_bytes": MAX_LOG_BYTES}, to_iso(now),
                      to_iso(now + timedelta(hours=1)))
    ring = LogRing()
    logger = logging.getLogger("edgefleet.test.control")
    logger.addHandler(ring)
    try:
        for _ in range(100):
            logger.warning("\x01" * 1000)  # each control character is six bytes of JSON: \u0001
    finally:
        logger.removeHandler(ring)
    outbox, store = Outbox(tmp_path / "agent.db"), JobStore(tmp_path / "agent.db")
    context = JobContext(None, None, None, outbox, ring, tmp_path, "generic-cpu")
    runner = JobRunner(trust=TrustedState("dev-1", [key.public_key]), store=store, outbox=outbox, context=context,
                       refusals=RefusalCount(), on_malformed=lambda topic: None)
    runner.start()
    try:
        runner.receive("jobs", canonical_json(sign_envelope(job.to_dict(), key)))
        results = wait_for(lambda: [json.loads(r.data_json) for r in outbox.pending_stored(10)
                                    if r.kind == RESULT_KIND], timeout=20, what="the job's result in the outbox")
    finally:
        runner.stop()
        store.close()
        outbox.close()
    assert [(r["state"], r["error"]["code"]) for r in results] == [("failed", "result_too_large")]
    assert all(len(r.data_json.encode()) <= MAX_RESULT_BYTES for r in Outbox(tmp_path / "agent.db").pending_stored(10))


def test_a_job_id_is_forgotten_only_a_day_after_its_job_expired_and_its_result_left(tmp_path):
    store = JobStore(tmp_path / "agent.db")
    other = JobDocument("job-2", "dev-1", "diagnostics", {}, JOB.issued, JOB.expires)
    for job in (JOB, other):
        store.claim(job)
        store.finish(JobResult(job.job_id, job.kind, "succeeded", {}, None, "a", "b"))
    store.mark_sent(JOB.job_id)  # job-2's result is not in the outbox yet
    expired = from_iso(JOB.expires)
    assert store.forget_expired(expired + timedelta(hours=23)) == 0, "a redelivery within the day still answers"
    assert store.forget_expired(expired + timedelta(hours=25)) == 1
    assert store.claim(JOB) == (True, None) and store.claim(other)[0] is False
    store.close()


def test_a_job_store_written_before_expiries_were_kept_still_claims_jobs(tmp_path):
    with sqlite3.connect(tmp_path / "agent.db") as db:  # the table as the first release made it
        db.execute("CREATE TABLE jobs (job_id TEXT PRIMARY KEY, kind TEXT NOT NULL, received TEXT NOT NULL, "
                   "result TEXT, sent INTEGER NOT NULL DEFAULT 0)")
        db.execute("INSERT INTO jobs VALUES ('job-0', 'diagnostics', '2026-01-01T00:00:00Z', '{}', 1)")
    store = JobStore(tmp_path / "agent.db")
    assert store.claim(JOB) == (True, None) and store.claim(replace(JOB, job_id="job-0"))[0] is False
    store.close()
