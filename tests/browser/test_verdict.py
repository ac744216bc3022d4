"""The A/B verdict on the dashboard: a better version is named only when its test passed; without labels the page
says what it can and cannot tell; field accuracy comes with a confusion matrix."""

from __future__ import annotations

import pytest

from .conftest import screenshot, sign_in
from .verdict_data import LABELLED

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
expect = playwright_api.expect

pytestmark = pytest.mark.browser


def test_a_split_whose_labels_came_back_names_the_better_version_with_its_accuracy(page, verdict_data):
    sign_in(page)
    page.goto(f"/#/deployments/{verdict_data.labelled_deployment_id}")
    comparison = page.get_by_role("region", name="A/B comparison", exact=True)
    line = comparison.locator(".verdict-line")
    expect(line).to_have_count(1)
    expect(line).to_have_attribute("data-better", "2")
    expect(line).to_contain_text("v2 is better at 95 %: accuracy 93.0 % vs 88.0 % on 1,400 and 600 labelled rows")
    rows = comparison.locator("tbody tr")
    for index, version in enumerate((1, 2)):
        labelled, correct = LABELLED[version]
        expect(rows.nth(index).locator("td").nth(9)).to_have_text(str(labelled))
        expect(rows.nth(index).locator("td").nth(10)).to_contain_text(f"{correct / labelled * 100:.1f} % (")
    accuracy = page.get_by_role("region", name="Field accuracy", exact=True)
    expect(accuracy.locator("figure.confusion")).to_have_count(2)
    v2 = accuracy.locator("figure.confusion").nth(0)  # newest version first
    expect(v2.locator("figcaption")).to_have_text("v2: confusion matrix")
    expect(v2.locator("tbody tr").nth(0)).to_have_text("0651" + str(700 - 651))  # label 0: 651 right, 49 called 1
    comparison.scroll_into_view_if_needed()
    screenshot(page, "ab-verdict")
    assert page.console_log.unexpected() == []


def test_a_split_without_labels_names_no_better_version_and_says_what_it_can_tell(page, verdict_data):
    sign_in(page)
    page.goto(f"/#/deployments/{verdict_data.unlabelled_deployment_id}")
    comparison = page.get_by_role("region", name="A/B comparison", exact=True)
    line = comparison.locator(".verdict-line")
    expect(line).to_have_attribute("data-better", "")
    expect(line).to_contain_text("no labels yet for v2 and v1, so neither is better on accuracy")
    expect(line).to_contain_text("answers by class")
    expect(line).not_to_contain_text("is better at")
    for row in comparison.locator("tbody tr").all():
        expect(row.locator("td").nth(9)).to_have_text("0")
        expect(row.locator("td").nth(10)).to_have_text("–")
    assert page.console_log.unexpected() == []
