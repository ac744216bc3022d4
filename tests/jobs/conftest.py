"""A real fleet for remote-job tests: the deployments suite's server in threads, a real Mosquitto and in-process
agents, with the job controller ticking every 0.1 s and judging timeouts as soon as the broker link is up."""

from __future__ import annotations

import pytest

from tests.deployments.conftest import Fleet, running_fleet
from tests.support.net import wait_for

FINAL = ("completed", "aborted", "cancelled")


class JobFleet(Fleet):
    def start_server(self, *, job_answer_settle_s: float = 0.0) -> None:
        super().start_server(job_tick_s=0.1, job_answer_settle_s=job_answer_settle_s)

    def job(self, job_id: int) -> dict:
        return self.api.get(f"/api/jobs/{job_id}").json()

    def run_job(self, kind: str, params: dict | None = None, *, expect_final: str = "completed", **body) -> dict:
        """Create a job on every agent (or ``devices``/``selector``) and wait until it ends in ``expect_final``."""
        body.setdefault("devices", sorted(self.agents))
        job = self.post("/api/jobs", {"kind": kind, "params": params or {}, **body}, expect=201)
        return self.wait_job(job["id"], lambda j: j["state"] in FINAL, what=f"job {job['id']} ({kind}) to end")

    def wait_job(self, job_id: int, check, *, timeout: float = 20, what: str = "") -> dict:
        def done():
            job = self.job(job_id)
            return job if check(job) else None

        return wait_for(done, timeout=timeout, what=what or f"job {job_id} to reach the expected state")


@pytest.fixture
def fleet(tmp_path, mosquitto, monkeypatch, store_url) -> JobFleet:
    yield from running_fleet(JobFleet, tmp_path, mosquitto.url, monkeypatch, store_url)
