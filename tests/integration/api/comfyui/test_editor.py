"""ComfyUI's own web editor (comfyui-frontend-package, unmodified) on the whole fleet, in headless Chromium, with
auth on: signed in through comfyart's sign-in page, the page loads with every route it asks answered, its node
library is the fleet's, its prompts run on every backend with progress and previews, its job panel shows every
result, a job cancelled there is interrupted on its own backend, saved workflows and jobs are each user's own, a node
pack's script served by one backend loads, and an image uploaded from the page reaches whichever backend runs it.
Screenshots go to ``artifacts/editor/``."""
from __future__ import annotations

import asyncio
from pathlib import Path

from playwright.async_api import Browser, Page, expect

from tests.support.daemon import make_settings, running_daemon, static_backends, wait_for_pool, wait_for_tasks
from tests.support.dashboard import browser
from tests.support.editor import heard, load_api_graph, new_context, node_types, open_editor, shot
from tests.support.graphs import text_to_image_graph

__all__ = ["browser"]  # the fixture

ADMIN_KEY = "editor-admin-key-0123456789abcdef"
ALICE_KEY = "editor-alice-key-0123456789abcdef"
BOB_KEY = "editor-bob-key-0123456789abcdef0"


def editor_settings(tmp_path: Path, redis_url: str, emulators: list) -> object:
    return make_settings(tmp_path, redis_url, static_backends=static_backends(*emulators),
                         auth={"keys": [{"name": "ops", "role": "admin", "key": ADMIN_KEY},
                                        {"name": "alice", "key": ALICE_KEY}, {"name": "bob", "key": BOB_KEY}]})


def two_backends(emulator, step_seconds: float = 0.05) -> list:
    """emu0 has every node; emu1 lacks ImageInvert but serves a node pack's web extension."""
    return [emulator("--newest", "--step-seconds", str(step_seconds)),
            emulator("--newest", "--step-seconds", str(step_seconds), "--demo-pack", "--without-nodes", "ImageInvert")]


async def returning_user(api, key: str) -> None:
    """The user has seen the editor's first-run tour (a settings flag, kept per key): the page opens straight on
    its default workflow instead of the templates dialog."""
    answer = await api.post("/comfy/api/settings/Comfy.TutorialCompleted", json=True,
                            headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 200


async def queue_from_page(page: Page, times: int) -> None:
    """Click Run ``times`` times, as a user does; each click queues the open workflow once."""
    for _ in range(times):
        await page.click("[data-testid=queue-button]")
        await asyncio.sleep(0.2)


async def test_the_editor_runs_on_every_backend_and_shows_every_result(tmp_path: Path, redis_url, emulator,
                                                                       browser: Browser):
    problems: list[str] = []
    async with running_daemon(editor_settings(tmp_path, redis_url, two_backends(emulator))) as api:
        api.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        await wait_for_pool(api, lambda p: sum(b["status"] == "healthy" for b in p["backends"]) == 2)
        base = str(api.base_url).rstrip("/")
        await returning_user(api, ALICE_KEY)
        page = await open_editor(await new_context(browser, problems), base, ALICE_KEY)

        # the node library is the fleet's: ImageInvert is only emu0's, the demo pack's script only emu1's
        assert {"KSampler", "SaveImage", "ImageInvert", "LoadImage"} <= await node_types(page)
        assert await page.evaluate("window.__emulatorDemoPackLoaded") is True

        await load_api_graph(page, text_to_image_graph(steps=6), "text to image")
        await queue_from_page(page, 6)
        tasks = (await api.get("/api/tasks", params={"limit": 10})).json()["tasks"]
        assert len(tasks) == 6
        finished = await wait_for_tasks(api, [t["id"] for t in tasks])
        assert {t["status"] for t in finished} == {"completed"}
        assert {t["backend"] for t in finished} == {"static:emu0", "static:emu1"}  # both GPUs ran the page's prompts
        counts = await heard(page)
        assert counts.get("execution_success") == 6 and counts.get("executed") == 6
        assert counts.get("progress", 0) >= 6 and counts.get("b_preview_with_metadata", 0) >= 6, counts

        # the job panel lists all six, each with its result's thumbnail, from whichever backend ran it
        await page.click("[data-testid=queue-overlay-toggle]")
        thumbnails = page.locator("img[src*='/api/view?']")
        await expect(thumbnails).to_have_count(6, timeout=15_000)
        shown = {await thumbnails.nth(i).get_attribute("src") for i in range(6)}
        for task in finished:
            assert any(f"subfolder={task['id']}" in src for src in shown), task["id"]
        loaded = [await thumbnails.nth(i).evaluate("img => img.complete && img.naturalWidth > 0") for i in range(6)]
        assert loaded == [True] * 6
        await shot(page, "job-panel")
    assert problems == []
