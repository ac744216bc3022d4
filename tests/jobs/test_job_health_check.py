"""The ``health_check`` job is a diagnostic: on a real agent it neither counts as a request nor as a crash."""

from __future__ import annotations

from tests.deployments.test_health import build, deploy
from tests.jobs.test_remote_jobs import by_device

# Passes the health check it is installed with (its first call), then every request crashes.
BROKEN_SINCE_INSTALL = (b"calls = 0\ndef init(context):\n    global model\n    model = context.model\n"
                        b"def run(inputs):\n    global calls\n    calls += 1\n    if calls > 1:\n"
                        b"        raise RuntimeError('broken since it was installed')\n    return model.run(inputs)\n")


def counted(agent, module: str) -> tuple[int, int]:
    """``(requests, errors)`` of the served version since it was loaded: what the telemetry and metrics report."""
    buckets, errors = agent.runtime.table[module].stats.totals()
    return sum(buckets), errors


def test_health_check_job_is_not_counted_as_a_request(fleet):
    (agent,) = fleet.start_agents(1)
    fleet.build()
    deploy(fleet, agent.device_id)
    fleet.wait_models({"scaler": 1})

    for _ in range(2):
        row = by_device(fleet.run_job("health_check", {"module": "scaler"}))[agent.device_id]
        assert row["state"] == "succeeded" and row["result"]["checked"] is True, row
    assert counted(agent, "scaler") == (0, 0), "an operator's diagnostic is not traffic"


def test_failing_health_check_job_never_counts_toward_a_crash_loop(fleet):
    (agent,) = fleet.start_agents(1)
    build(fleet, main=BROKEN_SINCE_INSTALL, health={"crash_limit": 1})
    deploy(fleet, agent.device_id)
    fleet.wait_models({"scaler": 1})

    row = by_device(fleet.run_job("health_check", {"module": "scaler"}))[agent.device_id]
    assert row["state"] == "failed" and row["error"]["code"] == "health_check_failed", row
    assert "broken since it was installed" in row["error"]["message"]
    served = agent.runtime.table.get("scaler")
    assert served is not None and served.version == 1, "a crash loop would have taken the module out of service"
    assert served.crashes.streak == 0 and not served.crashes.tripped
    assert counted(agent, "scaler") == (0, 0), "the failed sample is not a request error either"
