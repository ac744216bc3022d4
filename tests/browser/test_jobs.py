"""The Jobs view: per-device progress and results of real jobs run by two real agents."""

from __future__ import annotations

from dataclasses import dataclass

import re

import httpx
import pytest

from edge_agent.agent import Agent
from edge_agent.config import AgentConfig
from tests.support.net import wait_for

from .conftest import ADMIN_TOKEN, screenshot, sign_in

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
expect = playwright_api.expect

pytestmark = pytest.mark.browser
DEVICES = ("job-a", "job-b")


@dataclass
class JobData:
    api: httpx.Client
    diagnostics_id: int
    aborted_id: int
    all_failed_id: int


@pytest.fixture(scope="module")
def job_data(server, tmp_path_factory):
    api = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30)
    agents = [Agent(AgentConfig(device_id=d, state_dir=tmp_path_factory.mktemp(d), broker_url=server.broker_url,
                                trusted_keys=[server.signing_public_key_hex], scoring_port=0, tags={"site": "lab"},
                                heartbeat_interval_s=0.5, telemetry_flush_interval_s=0.2)) for d in DEVICES]
    for agent in agents:
        agent.start()
    try:
        wait_for(lambda: set(DEVICES) <= {d["id"] for d in api.get("/api/devices").json() if d["status"] == "online"},
                 timeout=20, what="the two agents to register")

        def run(body: dict) -> int:
            response = api.post("/api/jobs", json=body)
            assert response.status_code == 201, response.text
            job_id = response.json()["id"]
            wait_for(lambda: api.get(f"/api/jobs/{job_id}").json()["state"] != "running", timeout=20,
                     what=f"job {job_id} to end")
            return job_id

        yield JobData(api, run({"kind": "diagnostics", "selector": {"site": "lab"}}),
                      run({"kind": "restart_module", "params": {"module": "absent"}, "selector": {"site": "lab"},
                           "rate_per_minute": 1, "abort_after_failures": 1}),
                      run({"kind": "restart_module", "params": {"module": "absent"}, "selector": {"site": "lab"}}))
    finally:
        for agent in agents:
            agent.stop()
        api.close()


def test_job_pages_show_each_devices_progress_and_result(page, job_data):
    sign_in(page)
    page.get_by_role("link", name="Jobs").click()
    expect(page.locator("main tbody tr")).to_have_count(3)
    page.get_by_role("link", name=f"#{job_data.diagnostics_id}", exact=True).click()
    expect(page.get_by_role("heading", name=f"Job #{job_data.diagnostics_id}: diagnostics")).to_be_visible()
    devices = page.get_by_role("region", name="Devices")
    expect(devices.locator("tbody tr")).to_have_count(2)
    for device in DEVICES:
        row = devices.locator("tbody tr", has_text=device)
        expect(row).to_contain_text("succeeded")
        expect(row).to_contain_text(re.compile(r"providers [\w, ]*CPUExecutionProvider · memory [\d.]+ \w+ free of"))
    expect(page.get_by_role("button", name="Cancel")).to_be_disabled()
    screenshot(page, "job", full_page=True)

    page.goto(f"/#/jobs/{job_data.aborted_id}")
    expect(page.get_by_role("heading", name=f"Job #{job_data.aborted_id}: restart_module (module=absent)")).to_be_visible()
    summary = page.get_by_role("region", name="Summary")
    expect(summary).to_contain_text("abort threshold is 1")
    expect(summary).to_contain_text("1 device(s) per minute")
    rows = page.get_by_role("region", name="Devices").locator("tbody tr")
    expect(rows.nth(0)).to_contain_text("module_not_installed")
    expect(rows.nth(1)).to_contain_text("cancelled")
    assert page.console_log.unexpected() == []


def test_completed_job_where_every_device_failed_does_not_look_like_success(page, job_data):
    assert job_data.api.get(f"/api/jobs/{job_data.all_failed_id}").json()["state"] == "completed"
    sign_in(page)
    page.goto(f"/#/jobs/{job_data.all_failed_id}")
    title_badge = page.get_by_role("heading", name=f"Job #{job_data.all_failed_id}").locator(".badge")
    expect(title_badge).to_have_text("completed, 2 of 2 failed")
    expect(title_badge).to_have_class(re.compile(r"\bbadge-failed\b"))
    expect(page.get_by_role("region", name="Summary").locator(".badge").first).to_have_class(
        re.compile(r"\bbadge-failed\b"))
    page.goto("/#/jobs")
    row = page.locator("main tbody tr", has=page.get_by_role("link", name=f"#{job_data.all_failed_id}", exact=True))
    expect(row.locator(".badge").first).to_have_text("completed, 2 of 2 failed")
    expect(row.locator(".badge").first).not_to_have_class(re.compile(r"\bbadge-completed\b"))
    page.goto(f"/#/jobs/{job_data.diagnostics_id}")
    expect(page.get_by_role("heading", name=f"Job #{job_data.diagnostics_id}").locator(".badge")).to_have_class(
        re.compile(r"\bbadge-completed\b"))
    assert page.console_log.unexpected() == []
