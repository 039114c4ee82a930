"""ComfyUI's web editor (the comfyui-frontend-package wheel, unmodified) in headless Chromium, served by comfyart at
``/comfy/``: a browser context that reaches nothing beyond loopback (the page asks api.comfy.org for releases), the
sign-in page, the editor's readiness, the frames its API client receives, and the answers that count as problems.
Screenshots go to ``artifacts/editor/`` (or ``$COMFYART_ARTIFACTS/editor``)."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, BrowserContext, Page, Response, Route, expect

from tests.support.paths import ROOT

ARTIFACTS = Path(os.environ.get("COMFYART_ARTIFACTS", ROOT / "artifacts")) / "editor"
VIEWPORT = {"width": 1400, "height": 900}
# answers a real ComfyUI gives the page too, and the page expects: no user.css saved, no saved workflows or
# subgraphs yet, no templates file or workflow index of the user's, no logo index in the templates package
EXPECTED_NOT_FOUND = re.compile(r"/user\.css$|/api/userdata\?dir=|/templates/index_logo\.json$"
                                r"|/api/userdata/(comfy\.templates|workflows%2F\.index)\.json$")
# what the page's API client hears, counted in window.__heard
HEARD = ("execution_start", "progress", "progress_state", "executed", "execution_success", "execution_error",
         "execution_interrupted", "b_preview", "b_preview_with_metadata")


async def loopback_only(route: Route) -> None:
    host = route.request.url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]
    if host in ("127.0.0.1", "localhost") or route.request.url.startswith(("blob:", "data:")):
        await route.continue_()
    else:
        await route.abort("blockedbyclient")


async def new_context(browser: Browser, problems: list[str]) -> BrowserContext:
    """A context of its own (its own cookie jar: one signed-in user) that reaches loopback only and records
    problems: an uncaught error, or a 4xx/5xx answer from comfyart the page did not expect."""
    context = await browser.new_context(viewport=VIEWPORT)
    await context.route("**/*", loopback_only)

    def answered(response: Response) -> None:
        url = response.url
        if response.status >= 400 and "127.0.0.1" in url and not (
                response.status == 404 and EXPECTED_NOT_FOUND.search(url)):
            problems.append(f"{response.status} {response.request.method} {url}")

    context.on("response", answered)
    context.on("weberror", lambda error: problems.append(f"page error: {error.error}"))
    return context


async def open_editor(context: BrowserContext, base: str, key: str | None) -> Page:
    """Open ``/comfy/``: signed out, it sends the browser to the sign-in page, where ``key`` signs in; then wait
    until the editor has built its graph and node library, and count what its API client hears."""
    page = await context.new_page()
    await page.goto(base + "/comfy/")
    if key is not None:
        await expect(page.locator("#key")).to_be_visible()
        await page.fill("#key", key)
        await page.click("button[type=submit]")
    try:
        await page.wait_for_function("window.app?.graph && Object.keys(window.LiteGraph?.registered_node_types ?? {})"
                                     ".length > 0", timeout=60_000)
    except Exception:
        await shot(page, "not-ready")
        raise
    await page.evaluate("""(kinds) => { window.__heard = {}; for (const kind of kinds)
        window.app.api.addEventListener(kind, () => { window.__heard[kind] = (window.__heard[kind] ?? 0) + 1; }); }""",
                        list(HEARD))
    return page


async def heard(page: Page) -> dict[str, int]:
    counts: dict[str, int] = await page.evaluate("window.__heard")
    return counts


async def node_types(page: Page) -> set[str]:
    names: list[str] = await page.evaluate("Object.keys(window.LiteGraph.registered_node_types)")
    return set(names)


async def load_api_graph(page: Page, graph: dict[str, Any], name: str) -> None:
    """Open an API-format graph in a new tab of the editor, as dropping its file on the page does."""
    await page.evaluate("([graph, name]) => window.app.loadApiJson(graph, name)", [graph, name])


async def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"))
