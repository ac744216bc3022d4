"""The agent's job store on its real SQLite file: a job id is claimed once, across restarts of the agent."""

from __future__ import annotations

import json

from edge_agent.jobs import JobRunner, JobStore
from edge_agent.mqtt_link import RefusalCount
from edge_agent.outbox import Outbox
from fleet_protocol.jobs import RESULT_KIND, JobDocument, JobResult

JOB = JobDocument("job-1", "dev-1", "diagnostics", {}, "2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z")


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
