"""Remote jobs over a real Mosquitto between the fleet server (threads) and real in-process agents."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta

import onnxruntime
from sqlalchemy import update

from edge_agent.agent import Agent
from fleet_protocol import messages, topics
from fleet_protocol.canonical import canonical_json
from fleet_protocol.jobs import RESULT_KIND, JobDocument
from fleet_protocol.signing import SigningKey, sign_envelope
from fleet_protocol.timestamps import to_iso
from fleet_server.clock import utc_now
from fleet_server.store import jobs as job_store
from fleet_server.store.schema import job_devices, jobs
from tests.deployments.conftest import ADMIN_TOKEN
from tests.support.net import wait_for
from tests.support.postgres import BOTH_ENGINES
from tests.support.redelivery import publish_once

pytestmark = BOTH_ENGINES  # the store-touching tests run on SQLite and PostgreSQL


def jobs_notified(fleet) -> int:
    """How many ``jobs`` change notifications the dashboard's streams have had (see fleet_server.changes)."""
    return fleet.server.fleet.changes.counts().get("jobs", 0)


def wait_jobs_notified(fleet, after: int, what: str) -> None:
    wait_for(lambda: jobs_notified(fleet) > after, what=what)


def publish(broker_url: str, device_id: str, envelope: dict) -> None:
    """Put a job envelope on a device's jobs topic, as a redelivery (or a forger) would."""
    publish_once(broker_url, topics.device_topic(device_id, "jobs"), canonical_json(envelope))


def by_device(job: dict) -> dict[str, dict]:
    return {row["device_id"]: row for row in job["devices"]}


def test_each_job_kind_returns_its_result(fleet):
    (agent,) = fleet.start_agents(1)
    fleet.build()
    fleet.post("/api/deployments", {"module": "scaler", "devices": [agent.device_id]}, expect=201)
    fleet.wait_models({"scaler": 1})

    done = fleet.run_job("diagnostics")
    row = by_device(done)[agent.device_id]
    assert row["state"] == "succeeded" and row["answers"] == 1, row
    diagnostics = row["result"]
    assert diagnostics["providers"] == onnxruntime.get_available_providers()
    assert diagnostics["memory"]["total_bytes"] > diagnostics["memory"]["available_bytes"] > 0
    assert diagnostics["disk"]["free_bytes"] > 0 and diagnostics["versions"]["onnxruntime"] == onnxruntime.__version__
    assert abs(diagnostics["clock_skew_s"]) <= 5 and diagnostics["modules"] == {"scaler": 1}

    restarted = by_device(fleet.run_job("restart_module", {"module": "scaler"}))[agent.device_id]
    assert restarted["state"] == "succeeded" and restarted["result"]["version"] == 1, restarted
    assert agent.models == {"scaler": 1}
    checked = by_device(fleet.run_job("health_check", {"module": "scaler"}))[agent.device_id]
    assert checked["result"] == {"module": "scaler", "version": 1, "healthy": True, "checked": True}, checked
    missing_job = fleet.run_job("health_check", {"module": "absent"})
    missing = by_device(missing_job)[agent.device_id]
    assert missing["state"] == "failed" and missing["error"]["code"] == "module_not_running", missing
    flushed = by_device(fleet.run_job("flush_outbox"))[agent.device_id]
    assert flushed["state"] == "succeeded" and flushed["result"]["connected"] is True, flushed

    logs = by_device(fleet.run_job("collect_logs", {"max_bytes": 4096}))[agent.device_id]["result"]
    assert 0 < logs["bytes"] <= 4096 and logs["ring_max_bytes"] == 65_536
    assert f"job {missing_job['wire_id']} failed: module 'absent'" in logs["text"], "the agent's own recent records"

    shown = subprocess.run([sys.executable, "-m", "edgefleet_cli.main", "job", "run", f"device={agent.device_id}",
                            "diagnostics", "--wait", "--json"], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "EDGEFLEET_SERVER": fleet.server.url, "EDGEFLEET_TOKEN": ADMIN_TOKEN})
    assert shown.returncode == 0, shown.stderr
    job = json.loads(shown.stdout)
    assert job["state"] == "completed" and job["devices"][0]["result"]["providers"] == diagnostics["providers"]


def test_redelivered_job_runs_once_also_across_an_agent_restart(fleet):
    (agent,) = fleet.start_agents(1)
    done = fleet.run_job("diagnostics")
    first = by_device(done)[agent.device_id]
    assert agent.jobs.executed == 1
    envelope = job_store.envelope(db=fleet.server.fleet.db, job_id=done["id"], device_id=agent.device_id)

    publish(fleet.broker_url, agent.device_id, envelope)  # the broker delivers the same job again
    answered = fleet.wait_job(done["id"], lambda j: by_device(j)[agent.device_id]["answers"] == 2,
                              what="the device to answer the redelivered job")
    assert agent.jobs.executed == 1, "a redelivered job must not run again"
    assert by_device(answered)[agent.device_id]["result"] == first["result"], "answered from the stored result"

    agent.stop()
    again = Agent(agent.config)
    fleet.agents[agent.device_id] = again
    again.start()
    publish(fleet.broker_url, agent.device_id, envelope)
    fleet.wait_job(done["id"], lambda j: by_device(j)[agent.device_id]["answers"] == 3,
                   what="the restarted agent to answer the job from its store")
    assert again.jobs.executed == 0, "the restarted agent remembers the job id in its SQLite"


def test_an_answer_redelivered_in_the_same_telemetry_batch_is_counted_once(fleet):
    (agent,) = fleet.start_agents(1)
    done = fleet.run_job("diagnostics")
    answer = {"job_id": done["wire_id"], **{k: v for k, v in by_device(done)[agent.device_id].items()
                                            if k in ("state", "result", "error")}}
    answer |= {"kind": "diagnostics", "started": done["created"], "finished": done["created"]}
    ts = to_iso(utc_now())

    def deliver(outbox_id: str, *records: messages.TelemetryRecord) -> None:
        batch = messages.TelemetryBatch(agent.device_id, outbox_id, records)
        publish_once(fleet.broker_url, topics.device_topic(agent.device_id, "telemetry"),
                     messages.encode(batch.to_dict()))

    again = messages.TelemetryRecord(1, ts, RESULT_KIND, answer)  # the job answered once more (a redelivered job)
    deliver("outbox-redelivered", again)
    deliver("outbox-redelivered", again)  # ... in a batch the broker delivered twice (the PUBACK was lost)
    deliver("outbox-marker", messages.TelemetryRecord(1, ts, "marker", {}))  # arrives after both
    wait_for(lambda: fleet.api.get(f"/api/devices/{agent.device_id}/telemetry", params={"kind": "marker"}).json(),
             timeout=20, what="the server to take the batches in")
    assert by_device(fleet.job(done["id"]))[agent.device_id]["answers"] == 2, "one answer per device record"


def test_forged_foreign_and_expired_jobs_are_refused_and_run_nothing(fleet):
    (agent,) = fleet.start_agents(1)
    key = fleet.server.fleet.signing_key
    now = utc_now()

    def job(job_id: str, device_id: str, expires) -> dict:
        return JobDocument(job_id, device_id, "diagnostics", {}, to_iso(now - timedelta(hours=2)),
                           to_iso(expires)).to_dict()

    forger = SigningKey.from_seed(bytes(range(32)))
    publish(fleet.broker_url, agent.device_id, sign_envelope(job("job-forged", agent.device_id, now + timedelta(hours=1)), forger))
    publish(fleet.broker_url, agent.device_id, sign_envelope(job("job-foreign", "dev-99", now + timedelta(hours=1)), key))
    publish(fleet.broker_url, agent.device_id, sign_envelope(job("job-expired", agent.device_id, now - timedelta(hours=1)), key))
    wait_for(lambda: agent.refusals.by_code.keys() >= {"jobs/bad_signature", "jobs/wrong_device", "jobs/expired"},
             timeout=20, what=f"the three refusals to be counted (so far {agent.refusals.by_code})")
    assert agent.jobs.executed == 0

    done = fleet.run_job("diagnostics")  # the refusals changed nothing: a real job still runs
    assert by_device(done)[agent.device_id]["state"] == "succeeded" and agent.jobs.executed == 1


def test_abort_threshold_cancels_the_devices_not_sent_yet(fleet):
    fleet.start_agents(3)
    job = fleet.post("/api/jobs", {"kind": "restart_module", "params": {"module": "absent"}, "selector": {},
                                   "rate_per_minute": 1, "abort_after_failures": 1}, expect=201)
    ended = fleet.wait_job(job["id"], lambda j: j["state"] != "running", what="the job to stop at its threshold")
    assert ended["state"] == "aborted" and "abort threshold is 1" in ended["reason"], ended
    rows = by_device(ended)
    assert rows["dev-00"]["state"] == "failed" and rows["dev-00"]["error"]["code"] == "module_not_installed"
    assert [rows[d]["state"] for d in ("dev-01", "dev-02")] == ["cancelled", "cancelled"]
    assert rows["dev-01"]["sent"] is None and rows["dev-01"]["error"]["code"] == "aborted"
    entries = fleet.api.get("/api/audit").json()
    assert any(e["action"] == "abort job" and e["object"]["job_id"] == job["id"] for e in entries), entries


def test_rate_limit_sends_in_device_order_and_holds_the_rest(fleet):
    fleet.start_agents(3)
    before = jobs_notified(fleet)
    job = fleet.post("/api/jobs", {"kind": "diagnostics", "selector": {}, "rate_per_minute": 1}, expect=201)
    assert [r["state"] for r in job["devices"]] == ["sent", "queued", "queued"]
    wait_jobs_notified(fleet, before, "the dashboard's event stream to report the new job")
    answered = fleet.wait_job(job["id"], lambda j: j["devices"][0]["state"] == "succeeded",
                              what="the first device to answer")
    assert [r["device_id"] for r in answered["devices"]] == ["dev-00", "dev-01", "dev-02"]
    assert answered["state"] == "running" and answered["counts"]["queued"] == 2, "one per minute: the rest wait"
    running = jobs_notified(fleet)
    stopped = subprocess.run([sys.executable, "-m", "edgefleet_cli.main", "job", "cancel", str(job["id"]), "--json"],
                             capture_output=True, text=True, timeout=60,
                             env={**os.environ, "EDGEFLEET_SERVER": fleet.server.url, "EDGEFLEET_TOKEN": ADMIN_TOKEN})
    assert stopped.returncode == 0, stopped.stderr
    cancelled = json.loads(stopped.stdout)
    assert cancelled["state"] == "cancelled" and cancelled["counts"]["cancelled"] == 2
    wait_jobs_notified(fleet, running, "... and its end")


def test_a_restarted_server_sends_the_devices_it_missed_at_the_rate_not_at_once(fleet):
    fleet.start_agents(4)
    job = fleet.post("/api/jobs", {"kind": "diagnostics", "selector": {}, "rate_per_minute": 1}, expect=201)
    fleet.wait_job(job["id"], lambda j: j["devices"][0]["state"] == "succeeded", what="the first device to answer")
    fleet.stop_server()
    paused = to_iso(utc_now() - timedelta(minutes=10))  # the server was down for ten minutes
    with fleet.store() as db, db.transaction() as conn:
        conn.execute(update(jobs).where(jobs.c.id == job["id"]).values(created=paused))
        conn.execute(update(job_devices).where(job_devices.c.job_id == job["id"], job_devices.c.state != "queued")
                     .values(sent=paused))
    fleet.start_server()

    fleet.server.fleet.jobs.step(job["id"])
    fleet.server.fleet.jobs.step(job["id"])
    resumed = fleet.job(job["id"])
    assert [r["state"] != "queued" for r in resumed["devices"]] == [True, True, False, False], \
        "one device now, the next a minute later: a pause is not made up in one burst"


def test_a_job_that_expired_while_the_server_was_down_waits_for_the_answers_the_broker_kept(fleet):
    late, _ = fleet.start_agents(2)
    late.stop()  # offline: the broker keeps its job, and will keep its answer for the server
    job = fleet.post("/api/jobs", {"kind": "diagnostics", "selector": {}, "rate_per_minute": 1,
                                   "abort_after_failures": 1}, expect=201)
    assert [r["state"] for r in job["devices"]] == ["sent", "queued"]
    fleet.stop_server()
    with fleet.store() as db, db.transaction() as conn:  # its hour passed while the server was down
        conn.execute(update(job_devices).where(job_devices.c.job_id == job["id"], job_devices.c.device_id ==
                                               late.device_id).values(expires=to_iso(utc_now() - timedelta(seconds=1))))
    fleet.start_server(job_answer_settle_s=600)

    fleet.server.fleet.jobs.step_all()  # just after the link came back: the broker may still hold answers
    waiting = fleet.job(job["id"])
    assert waiting["state"] == "running" and by_device(waiting)[late.device_id]["state"] == "sent", waiting

    again = Agent(late.config)
    fleet.agents[late.device_id] = again
    again.start()
    answered = fleet.wait_job(job["id"], lambda j: by_device(j)[late.device_id]["state"] != "sent",
                              what="the device's answer to arrive")
    assert by_device(answered)[late.device_id]["state"] == "succeeded", answered
    assert answered["state"] == "running" and answered["counts"]["queued"] == 1, "no abort the device did not cause"


def test_a_device_sent_a_job_before_it_was_cancelled_times_out_if_it_never_answers(fleet):
    silent, _ = fleet.start_agents(2)
    silent.stop()  # offline: the broker keeps its job, nothing answers
    job = fleet.post("/api/jobs", {"kind": "diagnostics", "selector": {}, "rate_per_minute": 1}, expect=201)
    cancelled = fleet.post(f"/api/jobs/{job['id']}/cancel")
    assert [r["state"] for r in cancelled["devices"]] == ["sent", "cancelled"]
    with fleet.server.fleet.db.transaction() as db:  # its hour is up
        db.execute(update(job_devices).where(job_devices.c.job_id == job["id"], job_devices.c.device_id ==
                                             silent.device_id).values(expires=to_iso(utc_now() - timedelta(seconds=1))))
    before = jobs_notified(fleet)
    fleet.server.fleet.jobs.step_all()
    wait_jobs_notified(fleet, before, "the dashboard's event stream to report it")
    row = by_device(fleet.job(job["id"]))[silent.device_id]
    assert row["state"] == "timed_out" and row["error"]["code"] == "no_answer", row
