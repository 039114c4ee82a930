"""The dashboard's browser tests' tools: headless Chromium (Debian's ``chromium``, driven by Playwright), a page
whose errors are collected, screenshots (to ``artifacts/dashboard/``, or ``$COMFYART_ARTIFACTS/dashboard``), and a
daemon with two local emulators and two keys."""
from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Locator, Page, async_playwright, expect

from tests.support.daemon import make_settings
from tests.support.paths import ROOT
from tests.support.ports import free_port_range

ADMIN_KEY = "dash-admin-key-0123456789abcdef"
CLIENT_KEY = "dash-client-key-0123456789abcdef"
ARTIFACTS = Path(os.environ.get("COMFYART_ARTIFACTS", ROOT / "artifacts")) / "dashboard"
DESKTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}


def chromium_path() -> str:
    path = os.environ.get("COMFYART_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "the dashboard tests need Chromium: apt-get install chromium (scripts/setup installs it)"
    return path


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        try:
            yield launched
        finally:
            await launched.close()


# Chromium logs every 4xx answer to fetch(); these are the ones the tests ask for (no key yet, a bad parameter)
EXPECTED_REFUSALS = ("status of 401 (Unauthorized)", "status of 422 (Unprocessable")


async def open_page(opener: Browser | BrowserContext, viewport: dict | None, problems: list[str],
                    expected: tuple[str, ...] = EXPECTED_REFUSALS) -> Page:
    """A page of ``opener`` (a browser, or a context with its own credentials) whose errors, but the ``expected``
    refusals, go to ``problems``."""
    page = await opener.new_page(viewport=viewport) if viewport else await opener.new_page()
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", lambda message: problems.append(f"console: {message.text}")
            if message.type == "error" and not any(e in message.text for e in expected) else None)
    return page


async def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def settings_for(tmp_path: Path, redis_url: str):
    # two local emulators; ImageInvert raises, so a graph with one fails at that node
    command = ["{python}", "-m", "comfyart.emulator", "--host", "{address}", "--port", "{port}",
               "--step-seconds", "0.1", "--fail-node-types", "ImageInvert"]
    return make_settings(tmp_path, redis_url,
                         processes={"command": command, "address": "127.0.0.1", "ports": list(free_port_range(4)),
                                    "gpus": [0, 1], "startup_timeout": 20},
                         pool={"min_containers": 2, "max_containers": 2},
                         workflows={"directory": str(ROOT / "config" / "workflows")},
                         dashboard={"stats_interval_s": 0.5},
                         auth={"keys": [{"name": "ops", "role": "admin", "key": ADMIN_KEY},
                                        {"name": "user", "key": CLIENT_KEY}]})


async def choose_workflow(page: Page, name: str) -> None:
    await page.select_option("#submit-workflow", name)
    await expect(page.locator(f"#submit-params[data-workflow='{name}']")).to_have_count(1)


async def run_from_form(page: Page) -> Locator:
    """Click Run; the new task's card (found by its id: the cards of earlier runs stay below it)."""
    cards = page.locator("#submitted .task")
    before = await cards.count()
    await page.click("#submit-run")
    await expect(cards).to_have_count(before + 1, timeout=20_000)
    return page.locator(f"#submitted .task[data-id='{await cards.first.get_attribute('data-id')}']")


async def sign_in(page: Page, base: str, key: str) -> None:
    await page.goto(base + "/")
    await expect(page.locator("#login")).to_be_visible()
    await page.fill("#login-key", key)
    await page.click("#login-form button[type=submit]")
    await expect(page.locator("#login")).to_be_hidden()
    await expect(page.locator("#live")).to_have_text("live")
