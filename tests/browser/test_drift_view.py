"""The drift view: alerts raised once per crossing, statistics per feature per group, and PSI over time per
feature with the alert threshold drawn."""

from __future__ import annotations

import httpx
import pytest

from tests.server.builders import tiny_onnx

from .conftest import ADMIN_TOKEN, screenshot, sign_in
from .drift_data import populate_drift

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
expect = playwright_api.expect

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def drift_data(server) -> None:
    populate_drift(server.url, ADMIN_TOKEN, server.broker_url)


def test_the_drift_view_shows_the_open_alerts_and_psi_over_time_for_every_feature_of_each_site(page, drift_data):
    sign_in(page)
    page.goto("/#/models/scaler")
    page.get_by_role("link", name="drift").click()
    expect(page.get_by_role("heading", name="Drift of scaler:1")).to_be_visible()
    alerts = page.locator("section", has=page.get_by_role("heading", name="Alerts (2 open)"))
    expect(alerts.locator("tbody tr")).to_have_count(2)
    expect(alerts).to_contain_text("x[1]")
    expect(alerts).to_contain_text("y[1]")
    expect(alerts).not_to_contain_text("edge-b")

    page.goto("/#/models/scaler/versions/1/drift?by=site")
    north = page.locator("section", has=page.get_by_role("heading", name="north: 1 device(s), 12000 rows"))
    south = page.locator("section", has=page.get_by_role("heading", name="south: 1 device(s), 12000 rows"))
    expect(north.locator("figure.chart")).to_have_count(8)
    expect(north.locator("tbody tr", has_text="drift")).to_have_count(2)
    expect(south.locator("tbody tr", has_text="drift")).to_have_count(0)
    expect(north.get_by_role("img", name="x[1]: PSI over time")).to_be_visible()
    assert not page.console_log.unexpected()
    screenshot(page, "drift", full_page=True)


def test_a_version_registered_without_a_baseline_says_why_it_has_no_drift_and_its_properties_read_as_words(
        page, server):
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert httpx.post(f"{server.url}/api/models/plain", headers=headers,
                      files={"file": ("plain.onnx", tiny_onnx())}).status_code == 201
    assert httpx.patch(f"{server.url}/api/models/plain/versions/1", headers=headers,
                       json={"properties": {"dataset": {"rows": 2000}}}).status_code == 200
    sign_in(page)
    page.goto("/#/models/plain")
    expect(page.locator("tbody")).to_contain_text("dataset=rows: 2000")
    expect(page.locator("main")).not_to_contain_text("{")  # no raw JSON
    page.get_by_role("link", name="drift").click()
    expect(page.get_by_role("heading", name="Drift of plain:1")).to_be_visible()
    expect(page.locator("p.empty")).to_contain_text("registered without a baseline")
    expect(page.locator(".load-error")).to_have_count(0)
    assert not page.console_log.unexpected("404")
