"""Fixtures for the dashboard tests: a real server with the dashboard, seeded data, headless Chromium.

The browser is Debian's ``/usr/bin/chromium`` driven by Playwright for
Python (never ``playwright install``). Tests marked ``browser`` are skipped,
with the reason, where either is missing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet_server import runner
from fleet_server.config import ServerConfig

from .ended_data import EndedData, populate_ended
from .fleet_data import FleetData, populate
from .rollout_data import RolloutData, populate_rollout
from .verdict_data import VerdictData, populate_verdict

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
ADMIN_TOKEN = "browser-test-admin-token"
VIEWPORT = {"width": 1280, "height": 800}
TABLET = {"width": 820, "height": 1180}
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "browser: drives the dashboard in headless Chromium (needs playwright)")


def pytest_collection_modifyitems(config, items) -> None:
    reason = None
    if sync_playwright is None:
        reason = "playwright is not installed (.venv/bin/pip install playwright; never `playwright install`)"
    elif not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing (apt-get install chromium)"
    if reason:
        for item in items:
            if "browser" in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[runner.ServerThread]:
    """The whole server (API, dashboard, embedded broker) on free ports, with a known admin token."""
    config = ServerConfig(data_dir=tmp_path_factory.mktemp("browser") / "server", port=0, embedded_broker_port=0,
                          rollout_tick_s=0.2)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EDGEFLEET_ADMIN_TOKEN", ADMIN_TOKEN)
        with runner.ServerThread(config) as running:
            yield running


@pytest.fixture(scope="module")
def fleet_data(server) -> FleetData:
    return populate(server.url, ADMIN_TOKEN, server.broker_url)


@pytest.fixture(scope="module")
def rollout_data(server) -> RolloutData:
    """A rollout in progress and an A/B split (use in a module of its own: it brings other devices)."""
    return populate_rollout(server.url, ADMIN_TOKEN, server.broker_url)


@pytest.fixture(scope="module")
def ended_data(server) -> EndedData:
    """A completed and an aborted rollout, an A/B split with large counts, a target matching nothing."""
    return populate_ended(server.url, ADMIN_TOKEN, server.broker_url)


@pytest.fixture(scope="module")
def verdict_data(server) -> VerdictData:
    """Two A/B splits: one with labels that came back, one without (use in a module of its own)."""
    return populate_verdict(server.url, ADMIN_TOKEN, server.broker_url)


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class ConsoleLog:
    """Console errors and uncaught page errors, collected while a test runs."""

    def __init__(self, page):
        self.errors: list[str] = []
        page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))

    def unexpected(self, *allowed: str) -> list[str]:
        return [e for e in self.errors if not any(a in e for a in allowed)]


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport=VIEWPORT, base_url=server.url)
    page = context.new_page()
    page.console_log = ConsoleLog(page)
    yield page
    context.close()


def sign_in(page, token: str = ADMIN_TOKEN) -> None:
    page.goto("/")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()


def screenshot(page, name: str, *, full_page: bool = False) -> None:
    """Save ``docs/screenshots/<name>.png`` when ``EDGEFLEET_SCREENSHOTS=1`` (so test runs leave the tree clean);
    ``EDGEFLEET_SCREENSHOTS=/some/dir`` saves them there instead."""
    where = os.environ.get("EDGEFLEET_SCREENSHOTS")
    if not where:
        return
    folder = SCREENSHOTS if where == "1" else Path(where)
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=full_page)
