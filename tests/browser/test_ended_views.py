"""What the dashboard offers once things are over: no Roll back for an ended rollout, no empty device cell for a
target that matches nothing, share labels inside the class chart, and an A/B comparison that promote decides."""

from __future__ import annotations

import httpx
import pytest

from .conftest import ADMIN_TOKEN, screenshot, sign_in
from .ended_data import AB_ANSWERS, AB_ERRORS

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
expect = playwright_api.expect

pytestmark = pytest.mark.browser

# Every text of every bar chart, measured against its own chart: how far it sticks out (px, > 0 is cut off).
TEXT_OVERFLOW = """() => [...document.querySelectorAll(".bar-chart svg")].flatMap((chart) => {
  const box = chart.getBoundingClientRect();
  return [...chart.querySelectorAll("text")].map((text) => {
    const r = text.getBoundingClientRect();
    return [text.textContent, Math.max(r.right - box.right, box.left - r.left)];
  });
})"""


def api_get(server, path: str):
    response = httpx.get(f"{server.url}/api/{path}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 200, response.text
    return response.json()


COMPLETED_NOTE = ("Roll back is not offered: the rollout completed and every targeted device runs its version; "
                  "to go back, start a rollout of the previous version.")


def test_a_completed_rollout_offers_no_enabled_roll_back_and_says_why_in_one_plain_sentence(page, ended_data):
    sign_in(page)
    page.goto(f"/#/rollouts/{ended_data.completed_rollout_id}")
    expect(page.locator("main h1 .badge")).to_have_text("completed")
    rollback = page.get_by_role("button", name="Roll back", exact=True)
    expect(rollback).to_be_disabled()
    expect(rollback).to_have_accessible_description(COMPLETED_NOTE)
    expect(page.locator(".action-note")).to_have_text(COMPLETED_NOTE)
    screenshot(page, "rollout-completed")
    assert page.console_log.unexpected() == []


def test_the_actions_of_a_completed_rollout_are_disabled_not_only_styled(page, ended_data):
    posted = []
    page.on("request", lambda request: posted.append(request.url) if request.method == "POST" else None)
    sign_in(page)
    page.goto(f"/#/rollouts/{ended_data.completed_rollout_id}")
    expect(page.locator("main h1 .badge")).to_have_text("completed")
    for name in ("Pause", "Resume", "Abort", "Roll back"):
        button = page.get_by_role("button", name=name, exact=True)
        expect(button).to_be_disabled()
        # The element's own disabled state: click() on it does nothing (aria-disabled or a style would not stop it).
        assert button.evaluate("(el) => { el.click(); return el.disabled && el.matches(':disabled'); }"), name
        expect(page.get_by_role("dialog")).to_have_count(0)
    assert not [url for url in posted if "/api/rollouts/" in url]
    assert page.console_log.unexpected() == []


def test_an_aborted_rollout_keeps_roll_back_to_undo_the_devices_it_reached(page, ended_data):
    sign_in(page)
    page.goto(f"/#/rollouts/{ended_data.aborted_rollout_id}")
    expect(page.locator("main h1 .badge")).to_have_text("aborted")
    expect(page.get_by_role("button", name="Roll back", exact=True)).to_be_enabled()
    expect(page.locator(".action-note")).to_be_hidden()
    expect(page.get_by_role("button", name="Abort", exact=True)).to_be_disabled()
    assert page.console_log.unexpected() == []


def test_a_deployment_whose_target_matches_no_device_says_so_instead_of_an_empty_cell(page, ended_data):
    empty = ended_data.empty_deployment_id
    sign_in(page)
    page.get_by_role("link", name="Deployments").click()
    row = page.locator("main tbody tr").filter(has=page.get_by_role("link", name=f"#{empty}", exact=True))
    expect(row).to_contain_text("ring=nowhere")
    expect(row.locator("td").nth(4)).to_have_text("no devices match")
    screenshot(page, "deployments-no-match")
    page.goto("/#/")
    recent = page.get_by_role("region", name="Recent deployments", exact=True)
    expect(recent.locator("tbody tr").filter(has_text=f"#{empty}").locator("td").nth(2)).to_have_text("no devices match")
    page.goto(f"/#/deployments/{empty}")
    expect(page.get_by_role("region", name="Summary", exact=True)).to_contain_text("No device matches the target.")
    assert page.console_log.unexpected() == []


def test_every_label_of_the_class_chart_fits_inside_the_chart(page, ended_data):
    sign_in(page)
    page.goto(f"/#/deployments/{ended_data.ab_deployment_id}")
    comparison = page.get_by_role("region", name="A/B comparison", exact=True)
    expect(comparison.locator(".bar-chart svg")).to_have_count(2)
    expect(comparison).to_contain_text("33750 (70 %)")
    for width in (1280, 820, 390):  # three columns, two, one
        page.set_viewport_size({"width": width, "height": 900})
        cut = [(text, round(px, 1)) for text, px in page.evaluate(TEXT_OVERFLOW) if px > 0.5]
        assert cut == [], f"cut off at {width}px: {cut}"
    page.set_viewport_size({"width": 1280, "height": 900})
    comparison.scroll_into_view_if_needed()
    screenshot(page, "ab-class-chart")


def test_promote_decides_the_comparison_which_then_stays_frozen_without_a_promote_button(page, server, ended_data):
    ab = ended_data.ab_deployment_id
    sign_in(page)
    page.goto(f"/#/deployments/{ab}")
    comparison = page.get_by_role("region", name="A/B comparison", exact=True)
    rows = comparison.locator("tbody tr")
    expect(rows).to_have_count(2)
    for index, version in enumerate((1, 2)):
        answered = sum(AB_ANSWERS[version].values())
        expect(rows.nth(index).locator("td").nth(3)).to_have_text(str(answered + AB_ERRORS[version]))
        expect(rows.nth(index).locator("td").nth(4)).to_have_text(str(AB_ERRORS[version]))
    expect(comparison.get_by_role("columnheader", name="Latency p99")).to_be_visible()
    expect(comparison.locator("figcaption").first).to_have_text("v1: answers by class (label)")
    before = api_get(server, f"deployments/{ab}/variants")

    comparison.get_by_role("button", name="Promote v2").click()
    page.get_by_role("dialog", name="Promote v2 of scaler?").get_by_role("button", name="Promote v2").click()
    expect(page.get_by_role("heading", name="scaler v2", exact=False)).to_be_visible()
    promoted = int(page.evaluate("location.hash").rsplit("/", 1)[1])

    page.goto(f"/#/deployments/{ab}")
    comparison = page.get_by_role("region", name="A/B comparison", exact=True)
    expect(comparison.locator(".decided")).to_contain_text("v2 was promoted")
    expect(comparison.locator(".decided")).to_contain_text(f"as deployment #{promoted}")
    expect(comparison.get_by_role("button")).to_have_count(0)
    expect(comparison.locator("tbody tr").nth(1)).to_contain_text("(promoted)")
    assert api_get(server, f"deployments/{ab}/variants") == before
    screenshot(page, "ab-decided")
    assert page.console_log.unexpected() == []
