"""The dashboard in headless Chromium against a real server with seeded devices, models and a deployment."""

from __future__ import annotations

import httpx
import pytest

from .conftest import ADMIN_TOKEN, TABLET, screenshot, sign_in
from .fleet_data import publish_status

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
expect = playwright_api.expect

pytestmark = pytest.mark.browser
LIVE_TIMEOUT_MS = 15_000  # a change must show within this, without a reload


def rows(page):
    return page.locator("main tbody tr")


def test_every_page_loads_without_console_errors(page, fleet_data):
    sign_in(page)
    expect(page.get_by_role("heading", name="Fleet overview")).to_be_visible()
    expect(page.locator("#live")).to_have_text("Live")
    alerts = page.locator(".alerts")
    expect(alerts).to_contain_text("health_check_failed")
    expect(alerts).to_contain_text("old-01")
    expect(page.locator(".card-total .card-value")).to_have_text("5")
    screenshot(page, "overview")

    page.get_by_role("link", name="Devices", exact=True).click()
    expect(rows(page)).to_have_count(5)
    screenshot(page, "devices")

    page.get_by_role("link", name="Loading dock camera").click()
    expect(page.get_by_role("heading", name="Loading dock camera")).to_be_visible()
    expect(page.locator(".chart svg")).to_have_count(6)
    expect(page.locator("main")).to_contain_text("install_succeeded")
    expect(page.locator(".facts").first).to_contain_text("jetson-orin-nano")
    expect(page.get_by_role("region", name="Why these modules")).to_contain_text(
        f"device listed in deployment {fleet_data.deployment_id}")
    fallback = page.get_by_role("region", name="Cloud fallback").locator("tbody tr")
    expect(fallback).to_have_count(2)  # the fallback records summed by model and reason
    expect(fallback.filter(has_text="low_confidence").locator("td")).to_have_text(
        ["scaler", "low_confidence", "8", "3", "0"])
    screenshot(page, "device", full_page=True)

    page.get_by_role("link", name="Models").click()
    expect(rows(page)).to_have_count(2)
    page.get_by_role("link", name="scaler").click()
    expect(rows(page)).to_have_count(2)
    expect(page.locator("main")).to_contain_text("FP32")
    screenshot(page, "models")

    page.get_by_role("link", name="Deployments").click()
    expect(rows(page)).to_have_count(1)
    expect(rows(page)).to_contain_text("1 running")
    screenshot(page, "deployments")

    page.get_by_role("link", name=f"#{fleet_data.deployment_id}").click()
    expect(page.locator("main")).to_contain_text("1 failed")
    expect(page.locator(".explain")).to_contain_text("failed its health check")
    screenshot(page, "deployment")
    assert page.console_log.unexpected() == []


def test_sign_in_with_a_wrong_token_is_refused_with_a_message(page, fleet_data):
    sign_in(page, "not-the-admin-token")
    expect(page.locator("#login-message")).to_contain_text("refused by the server")
    expect(page.get_by_role("navigation", name="Main")).to_be_hidden()
    assert page.evaluate("sessionStorage.length") == 0
    screenshot(page, "login-refused")
    assert page.console_log.unexpected("401 (Unauthorized)") == []


def test_device_going_offline_shows_without_a_reload(page, server, fleet_data):
    sign_in(page)
    page.goto(f"/#/devices?q={fleet_data.live_device}")
    expect(page.locator("#live")).to_have_text("Live")
    expect(rows(page)).to_have_count(1)
    expect(rows(page).locator(".badge-online")).to_be_visible()
    page.evaluate("window.noReloadMarker = true")

    publish_status(server.broker_url, fleet_data.live_device, "offline")

    expect(rows(page).locator(".badge-offline")).to_be_visible(timeout=LIVE_TIMEOUT_MS)
    assert page.evaluate("window.noReloadMarker") is True
    assert page.console_log.unexpected() == []


def test_polling_takes_over_when_the_event_stream_is_unavailable(page, server, fleet_data):
    page.route("**/api/events**", lambda route: route.fulfill(status=503, body="unavailable"))
    sign_in(page)
    page.goto("/#/devices?q=sensor-09")
    expect(page.locator("#live")).to_have_text("Polling every 5 s")
    response = httpx.patch(f"{server.url}/api/devices/sensor-09", json={"name": "Depot humidity sensor"},
                           headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 200, response.text
    expect(rows(page)).to_contain_text("Depot humidity sensor", timeout=LIVE_TIMEOUT_MS)
    assert page.console_log.unexpected("503", "EventSource") == []


def test_device_table_filters_narrow_the_rows(page, fleet_data):
    sign_in(page)
    page.goto("/#/devices")
    expect(rows(page)).to_have_count(5)

    page.get_by_label("Tag").select_option("site=depot")
    expect(rows(page)).to_have_count(2)
    expect(rows(page)).to_contain_text(["cam-02", "sensor-09"])

    page.get_by_label("Firmware profile").select_option("raspberry-pi-5")
    expect(rows(page)).to_have_count(1)
    expect(rows(page)).to_contain_text("cam-02")

    page.goto("/#/devices?module=scaler%401")
    expect(page.get_by_label("Module version")).to_have_value("scaler@1")
    expect(rows(page)).to_have_count(1)
    expect(rows(page)).to_contain_text("Loading dock camera")

    page.goto("/#/devices")
    page.get_by_label("Status").select_option("offline")
    expect(rows(page).locator(".badge-online")).to_have_count(0)
    expect(rows(page).filter(has_text=fleet_data.offline_device)).to_have_count(1)
    page.reload()
    expect(page.get_by_label("Status")).to_have_value("offline")

    page.goto("/#/devices")
    page.get_by_label("Search").fill("dock")
    expect(rows(page)).to_have_count(1)
    page.get_by_label("Search").fill("no-such-device")
    expect(page.locator("main")).to_contain_text("No device matches these filters.")
    assert page.console_log.unexpected() == []


@pytest.mark.parametrize("route", ["/#/", "/#/devices", "/#/devices/cam-01", "/#/models/scaler", "/#/deployments/1"])
def test_pages_fit_a_tablet_without_sideways_scrolling(browser, server, fleet_data, route):
    context = browser.new_context(viewport=TABLET, base_url=server.url)
    try:
        page = context.new_page()
        page.add_init_script(f"sessionStorage.setItem('edgefleet.token', {ADMIN_TOKEN!r})")
        page.goto(route)
        expect(page.locator("main h1")).to_be_visible()
        expect(page.locator("main .panel, main table").first).to_be_visible()
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0
        if route == "/#/":
            screenshot(page, "overview-tablet", full_page=True)
    finally:
        context.close()
