"""The device page shows an agent self-update that rolled back: the version still running and the reason.

A fake device publishes, over the server's broker, the reported state a real agent publishes after its
supervisor rolled a new version back (see tests/selfupdate for the real processes).
"""

from __future__ import annotations

import pytest

from fleet_protocol.messages import ModuleReport
from tests.support.net import wait_for

from .conftest import ADMIN_TOKEN, screenshot, sign_in
from .fleet_data import Seeder

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
expect = playwright_api.expect

pytestmark = pytest.mark.browser

DEVICE = "upd-07"
ROLLED_BACK = {"code": "agent_rolled_back", "category": "health",
               "message": "agent 0.1.3 was rolled back to 0.1.0: it was not healthy within 15s (not connected to the "
                          "broker at mqtt://127.0.0.1:1883)"}


def test_device_page_shows_a_rolled_back_agent_update_with_its_reason(page, server):
    with Seeder(server.url, ADMIN_TOKEN, server.broker_url, "browser-test-agent-rollback") as seed:
        seed.online(DEVICE, "generic-cpu", {"site": "selfupdate"})
        seed.report(DEVICE, "generic-cpu", ModuleReport("edgefleet-agent", "failed", target_version=2,
                                                        target_digest="ab" * 32, error=ROLLED_BACK))
        wait_for(lambda: seed.api.get(f"/api/devices/{DEVICE}").json().get("modules"), timeout=30,
                 what="the device's reported state")
    sign_in(page)
    page.goto(f"/#/devices/{DEVICE}")
    row = page.locator("main tr", has_text="edgefleet-agent")
    expect(row).to_contain_text("failed")
    expect(row).to_contain_text("agent_rolled_back")
    expect(row).to_contain_text(ROLLED_BACK["message"])
    expect(row).to_contain_text("v2")  # the target version it did not keep
    expect(page.locator(".facts").first).to_contain_text("0.1.0")  # the agent version still running
    screenshot(page, "device-agent-rollback", full_page=True)
    assert page.console_log.unexpected() == []
