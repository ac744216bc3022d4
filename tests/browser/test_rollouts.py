"""Rollouts, A/B variants, device explanations and roles in the dashboard, against a rollout caught mid-way."""

from __future__ import annotations

import httpx
import pytest

from .conftest import ADMIN_TOKEN, TABLET, screenshot, sign_in

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
expect = playwright_api.expect

pytestmark = pytest.mark.browser
LIVE_TIMEOUT_MS = 15_000  # a change must show within this, without a reload
OPERATOR_BUTTONS = ("Pause", "Resume", "Abort", "Roll back")
FETCH_PAUSE = """async (id) => {
  const response = await fetch(`/api/rollouts/${id}/pause`, {
    method: "POST", headers: {Authorization: `Bearer ${sessionStorage.getItem("edgefleet.token")}`}});
  return [response.status, (await response.json()).detail];
}"""


def api_state(server, rollout_id: int) -> str:
    response = httpx.get(f"{server.url}/api/rollouts/{rollout_id}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 200, response.text
    return response.json()["state"]


def api_act(server, rollout_id: int, action: str) -> None:
    response = httpx.post(f"{server.url}/api/rollouts/{rollout_id}/{action}",
                          headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 200, response.text


def region(page, name: str):
    return page.get_by_role("region", name=name, exact=True)


def test_rollout_pages_load_without_console_errors(page, rollout_data):
    rollout = rollout_data.rollout_id
    sign_in(page)
    active = region(page, "Active rollouts")
    expect(active.locator("tbody tr")).to_have_count(1)
    expect(active).to_contain_text("scaler v2")

    page.get_by_role("link", name="Rollouts").click()
    expect(page.locator("main tbody tr")).to_have_count(1)
    page.get_by_role("link", name=f"#{rollout}", exact=True).click()
    expect(page.get_by_role("heading", name=f"Rollout #{rollout}: scaler v2")).to_be_visible()
    expect(page.locator("[data-count=running] .card-value")).to_have_text("4")
    expect(page.locator("[data-count=failed] .card-value")).to_have_text("1")
    expect(page.locator("[data-count=unknown] .card-value")).to_have_text("1")
    waves = region(page, "Waves").locator("tbody tr")
    expect(waves).to_have_count(3)
    expect(waves.nth(2)).to_contain_text("current")
    expect(region(page, "Devices")).to_contain_text("health_check_failed")
    expect(region(page, "History")).to_contain_text("devices admitted")
    screenshot(page, "rollout")

    page.goto(f"/#/devices/{rollout_data.waiting_device}")
    explain = region(page, "Why these modules")
    expect(explain).to_contain_text("tags match selector ring=beta")
    expect(explain).to_contain_text("its staged rollout has not reached this device yet")

    page.goto(f"/#/deployments/{rollout_data.ab_deployment_id}")
    comparison = region(page, "A/B comparison")
    expect(comparison.locator("tbody tr")).to_have_count(2)
    expect(comparison.locator(".bar-chart svg")).to_have_count(2)
    expect(comparison).to_contain_text("cat")
    expect(comparison.get_by_role("button", name="Promote v2")).to_be_enabled()
    screenshot(page, "ab-comparison")
    assert page.console_log.unexpected() == []


def test_operator_pauses_a_rollout_from_the_ui_and_the_api_shows_it_paused_then_resumes_it(page, server,
                                                                                          rollout_data):
    rollout = rollout_data.rollout_id
    sign_in(page, rollout_data.operator_token)
    expect(page.locator("#who")).to_have_text("browser-operator · operator")
    page.goto(f"/#/rollouts/{rollout}")
    pause, resume = page.get_by_role("button", name="Pause"), page.get_by_role("button", name="Resume")
    expect(pause).to_be_enabled()
    expect(resume).to_be_disabled()

    pause.click()
    dialog = page.get_by_role("dialog", name=f"Pause rollout #{rollout}?")
    expect(dialog).to_contain_text("No further devices are let in")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_have_count(0)
    assert api_state(server, rollout) == "running"

    pause.click()
    page.get_by_role("dialog").get_by_role("button", name="Pause rollout").click()
    expect(page.get_by_role("status").filter(has_text="Rollout")).to_have_text(f"Rollout #{rollout} is now paused.")
    assert api_state(server, rollout) == "paused"
    expect(page.locator("main h1 .badge")).to_have_text("paused")
    expect(pause).to_be_disabled()

    resume.click()
    page.get_by_role("dialog", name=f"Resume rollout #{rollout}?").get_by_role("button", name="Resume rollout").click()
    expect(page.get_by_role("status").filter(has_text="Rollout")).to_have_text(f"Rollout #{rollout} is now running.")
    assert api_state(server, rollout) == "running"
    expect(pause).to_be_enabled()
    assert page.console_log.unexpected() == []


def test_viewer_gets_no_operator_buttons_and_the_api_refuses_its_pause(page, server, rollout_data):
    rollout = rollout_data.rollout_id
    sign_in(page, rollout_data.viewer_token)
    expect(page.locator("#who")).to_have_text("browser-viewer · viewer")
    page.goto(f"/#/rollouts/{rollout}")
    expect(page.get_by_role("heading", name=f"Rollout #{rollout}: scaler v2")).to_be_visible()
    expect(region(page, "Waves").locator("tbody tr")).to_have_count(3)
    for name in OPERATOR_BUTTONS:
        expect(page.get_by_role("button", name=name, exact=True)).to_have_count(0)

    before = api_state(server, rollout)
    status, detail = page.evaluate(FETCH_PAUSE, rollout)
    assert status == 403 and "operator role" in detail
    assert api_state(server, rollout) == before

    page.goto(f"/#/deployments/{rollout_data.ab_deployment_id}")
    expect(region(page, "A/B comparison").locator("tbody tr")).to_have_count(2)
    expect(page.get_by_role("button", name="Promote v1")).to_have_count(0)
    assert page.console_log.unexpected("403 (Forbidden)") == []


def test_a_rollout_paused_elsewhere_shows_as_paused_without_a_reload(page, server, rollout_data):
    rollout = rollout_data.rollout_id
    sign_in(page, rollout_data.viewer_token)
    page.goto(f"/#/rollouts/{rollout}")
    expect(page.locator("#live")).to_have_text("Live")
    expect(page.locator("main h1 .badge")).to_have_text("running")
    page.evaluate("window.noReloadMarker = true")
    try:
        api_act(server, rollout, "pause")
        expect(page.locator("main h1 .badge")).to_have_text("paused", timeout=LIVE_TIMEOUT_MS)
        expect(region(page, "Summary")).to_contain_text("paused by an operator", timeout=LIVE_TIMEOUT_MS)
        expect(region(page, "History").locator("tbody tr").first).to_contain_text("paused", timeout=LIVE_TIMEOUT_MS)
    finally:
        api_act(server, rollout, "resume")
    expect(page.locator("main h1 .badge")).to_have_text("running", timeout=LIVE_TIMEOUT_MS)
    assert page.evaluate("window.noReloadMarker") is True
    assert page.console_log.unexpected() == []


def test_promoting_an_ab_variant_deploys_it_alone(page, server, rollout_data):
    sign_in(page)
    page.goto(f"/#/deployments/{rollout_data.ab_deployment_id}")
    page.get_by_role("button", name="Promote v2").click()
    dialog = page.get_by_role("dialog", name="Promote v2 of scaler?")
    expect(dialog).to_contain_text("the A/B split ends")
    dialog.get_by_role("button", name="Promote v2").click()
    expect(page.get_by_role("heading", name="scaler v2", exact=False)).to_be_visible()
    new_id = int(page.evaluate("location.hash").rsplit("/", 1)[1])
    created = httpx.get(f"{server.url}/api/deployments/{new_id}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert created.json()["version"] == 2 and created.json()["split"] is None
    assert created.json()["target"]["selector"] == {"ring": "ab"}
    assert page.console_log.unexpected() == []


@pytest.mark.parametrize("route", ["/#/rollouts/{rollout}", "/#/deployments/{ab}"])
def test_rollout_and_ab_pages_fit_a_tablet_without_sideways_scrolling(browser, server, rollout_data, route):
    context = browser.new_context(viewport=TABLET, base_url=server.url)
    try:
        page = context.new_page()
        page.add_init_script(f"sessionStorage.setItem('edgefleet.token', {ADMIN_TOKEN!r})")
        page.goto(route.format(rollout=rollout_data.rollout_id, ab=rollout_data.ab_deployment_id))
        expect(page.locator("main .panel table").first).to_be_visible()
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0
    finally:
        context.close()
