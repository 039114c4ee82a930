"""ComfyUI's own web editor (comfyui-frontend-package, unmodified) on the whole fleet, in headless Chromium, with
auth on: signed in through comfyart's sign-in page, the page loads with every route it asks answered, its node
library is the fleet's, its prompts run on every backend with progress and previews, its job panel shows every
result, a job cancelled there is interrupted on its own backend, saved workflows and jobs are each user's own, a node
pack's script served by one backend loads, and an image uploaded from the page reaches whichever backend runs it.
Screenshots go to ``artifacts/editor/``."""
from __future__ import annotations

import asyncio
import io
from pathlib import Path

import httpx
from PIL import Image
from playwright.async_api import Browser, Page, expect

from tests.support.daemon import make_settings, running_daemon, static_backends, wait_for_pool, wait_for_tasks
from tests.support.dashboard import browser
from tests.support.editor import heard, load_api_graph, new_context, node_types, open_editor, shot
from tests.support.graphs import default_editor_graph, text_to_image_graph

__all__ = ["browser"]  # the fixture

ADMIN_KEY = "editor-admin-key-0123456789abcdef"
ALICE_KEY = "editor-alice-key-0123456789abcdef"
BOB_KEY = "editor-bob-key-0123456789abcdef0"


def editor_settings(tmp_path: Path, redis_url: str, emulators: list) -> object:
    return make_settings(tmp_path, redis_url, static_backends=static_backends(*emulators),
                         auth={"keys": [{"name": "ops", "role": "admin", "key": ADMIN_KEY},
                                        {"name": "alice", "key": ALICE_KEY}, {"name": "bob", "key": BOB_KEY}]})


def two_backends(emulator, step_seconds: float = 0.05, node_seconds: float = 0.0) -> list:
    """emu0 has every node; emu1 lacks ImageInvert but serves a node pack's web extension."""
    timing = ("--newest", "--step-seconds", str(step_seconds), "--node-seconds", str(node_seconds))
    return [emulator(*timing), emulator(*timing, "--demo-pack", "--without-nodes", "ImageInvert")]


async def returning_user(api, key: str) -> None:
    """The user has seen the editor's first-run tour (a settings flag, kept per key): the page opens straight on
    its default workflow instead of the templates dialog."""
    answer = await api.post("/comfy/api/settings/Comfy.TutorialCompleted", json=True,
                            headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 200


async def queue_from_page(page: Page, api, times: int) -> None:
    """Click Run ``times`` times, as a user does: each click queues the open workflow once, and the next click comes
    once comfyart has it (the page posts it after the click, and ignores a click while it is still queueing)."""
    total = (await api.get("/api/tasks", params={"limit": 1})).json()["total"]
    for _ in range(times):
        await page.click("[data-testid=queue-button]")
        for _ in range(200):
            if (await api.get("/api/tasks", params={"limit": 1})).json()["total"] > total:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("a click on Run queued no prompt within 10 s")
        total += 1


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

        # the page opened on its own default workflow (text to image): it runs six times
        assert "UNETLoader" in await page.evaluate("window.app.graph._nodes.map(n => n.type)")
        await shot(page, "default-workflow")
        await queue_from_page(page, api, 6)
        tasks = (await api.get("/api/tasks", params={"limit": 10})).json()["tasks"]
        assert len(tasks) == 6
        first = (await api.get(f"/api/tasks/{tasks[0]['id']}")).json()
        assert first["prompt"] == default_editor_graph()  # the page's own graph, as it sent it
        finished = await wait_for_tasks(api, [t["id"] for t in tasks])
        assert {t["status"] for t in finished} == {"completed"}
        assert {t["backend"] for t in finished} == {"static:emu0", "static:emu1"}  # both GPUs ran the page's prompts
        # a prompt's end frames reach the page as its task completes (the relay holds them until its outputs are
        # stored, so the page's /view finds them): the last may land just after the record reads completed
        await page.wait_for_function("(window.__heard.execution_success || 0) >= 6", timeout=10_000)
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
        await page.click("[data-testid=queue-overlay-toggle]")  # closed again: the canvas with its last result
        await shot(page, "default-workflow-finished")
    assert problems == []


async def test_a_job_cancelled_in_the_panel_is_interrupted_on_its_own_backend(tmp_path: Path, redis_url, emulator,
                                                                              browser: Browser):
    problems: list[str] = []
    emulators = two_backends(emulator, step_seconds=0.3)
    async with running_daemon(editor_settings(tmp_path, redis_url, emulators)) as api, httpx.AsyncClient() as plain:
        api.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        await wait_for_pool(api, lambda p: sum(b["status"] == "healthy" for b in p["backends"]) == 2)
        await returning_user(api, ALICE_KEY)
        page = await open_editor(await new_context(browser, problems), str(api.base_url).rstrip("/"), ALICE_KEY)
        await load_api_graph(page, text_to_image_graph(steps=20), "slow")
        await queue_from_page(page, api, 3)
        running = await wait_for_running(api, 2)  # one on each backend; the third waits

        await page.click("[data-testid=queue-overlay-toggle]")
        victim = running[0]
        row = page.locator(f"[data-job-id='{victim['comfy_prompt_id']}']")
        await row.hover()
        await row.get_by_role("button", name="Cancel").click()
        await shot(page, "job-cancelled")

        tasks = (await api.get("/api/tasks", params={"limit": 10})).json()["tasks"]
        finished = {t["id"]: t for t in await wait_for_tasks(api, [t["id"] for t in tasks])}
        assert finished[victim["id"]]["status"] == "canceled"
        assert [t["status"] for i, t in finished.items() if i != victim["id"]] == ["completed", "completed"]
        # on its backend, that prompt was interrupted; the other backend's prompt ran to its end
        backend = emulators[int(victim["backend"].removeprefix("static:emu"))]
        entry = (await plain.get(f"{backend.url}/history/{victim['prompt_id']}")).json()[victim["prompt_id"]]
        assert "execution_interrupted" in [kind for kind, _ in entry["status"]["messages"]]
        other = running[1]
        backend = emulators[int(other["backend"].removeprefix("static:emu"))]
        entry = (await plain.get(f"{backend.url}/history/{other['prompt_id']}")).json()[other["prompt_id"]]
        assert entry["status"]["status_str"] == "success"
    assert problems == []


async def test_saved_workflows_and_jobs_are_each_users_own(tmp_path: Path, redis_url, emulator, browser: Browser):
    problems: list[str] = []
    async with running_daemon(editor_settings(tmp_path, redis_url, two_backends(emulator))) as api:
        api.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        await wait_for_pool(api, lambda p: sum(b["status"] == "healthy" for b in p["backends"]) == 2)
        base = str(api.base_url).rstrip("/")
        for key in (ALICE_KEY, BOB_KEY):
            await returning_user(api, key)
        alice = await open_editor(await new_context(browser, problems), base, ALICE_KEY)
        await load_api_graph(alice, text_to_image_graph(steps=2), "lighthouse")
        await queue_from_page(alice, api, 2)
        await alice.keyboard.press("Control+s")  # saves the open workflow under its name
        await alice.keyboard.press("Enter")
        await expect_saved(api, ALICE_KEY, "workflows/lighthouse.json")

        await alice.reload()
        await alice.wait_for_function("window.app?.graph")
        await alice.click("[data-testid=workflows-tab-button]")
        await expect(alice.get_by_text("lighthouse.json").or_(alice.get_by_text("lighthouse", exact=True))
                     .first).to_be_visible()
        await alice.click("[data-testid=queue-overlay-toggle]")
        await expect(alice.locator("[data-job-id]")).to_have_count(2, timeout=15_000)
        await shot(alice, "alice-after-reload")

        bob = await open_editor(await new_context(browser, problems), base, BOB_KEY)
        await bob.click("[data-testid=workflows-tab-button]")
        await expect(bob.get_by_text("lighthouse")).to_have_count(0)
        await load_api_graph(bob, text_to_image_graph(seed=7, steps=2), "bobs")
        await queue_from_page(bob, api, 1)
        await bob.click("[data-testid=queue-overlay-toggle]")
        await expect(bob.locator("[data-job-id]")).to_have_count(1, timeout=15_000)  # his own only
        await shot(bob, "bob-own-jobs")
    assert problems == []


async def test_an_image_uploaded_from_the_page_reaches_whichever_backend_runs_it(tmp_path: Path, redis_url, emulator,
                                                                                 browser: Browser):
    problems: list[str] = []
    emulators = two_backends(emulator, node_seconds=0.3)  # each prompt takes a while: the second goes elsewhere
    async with running_daemon(editor_settings(tmp_path, redis_url, emulators)) as api:
        api.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        await wait_for_pool(api, lambda p: sum(b["status"] == "healthy" for b in p["backends"]) == 2)
        await returning_user(api, ALICE_KEY)
        page = await open_editor(await new_context(browser, problems), str(api.base_url).rstrip("/"), ALICE_KEY)
        await load_api_graph(page, {"1": {"class_type": "LoadImage", "inputs": {"image": "missing.png"}},
                                    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0],
                                                                                "filename_prefix": "uploaded"}}},
                             "upload")
        picture = tmp_path / "photo.png"
        Image.new("RGB", (40, 30), (200, 30, 30)).save(picture)
        async with page.expect_file_chooser() as chooser:  # the LoadImage node's own upload button
            await page.evaluate("""() => window.app.graph._nodes.find(n => n.type === 'LoadImage')
                                   .widgets.find(w => w.type === 'button' || w.name === 'upload').callback()""")
        await (await chooser.value).set_files(str(picture))
        await page.wait_for_function("""() => window.app.graph._nodes.find(n => n.type === 'LoadImage')
                                        .widgets[0].value !== 'missing.png'""")
        await queue_from_page(page, api, 4)
        tasks = (await api.get("/api/tasks", params={"limit": 10})).json()["tasks"]
        finished = await wait_for_tasks(api, [t["id"] for t in tasks])
        assert [t["status"] for t in finished] == ["completed"] * 4
        assert {t["backend"] for t in finished} == {"static:emu0", "static:emu1"}
        for task in finished:  # each backend read the page's picture: the saved image is it
            saved = (await api.get(f"/api/tasks/{task['id']}/output")).content
            assert Image.open(io.BytesIO(saved)).size == (40, 30)
        await shot(page, "uploaded")
    # the page previewed the graph's first value before the upload replaced it
    assert [p for p in problems if "filename=missing.png" not in p] == []


async def wait_for_running(api, count: int, timeout_s: float = 20.0) -> list[dict]:
    for _ in range(int(timeout_s / 0.1)):
        tasks = (await api.get("/api/tasks", params={"status": "running"})).json()["tasks"]
        if len(tasks) >= count:
            return tasks
        await asyncio.sleep(0.1)
    raise AssertionError(f"fewer than {count} tasks running after {timeout_s} s")


async def expect_saved(api, key: str, path: str, timeout_s: float = 10.0) -> None:
    for _ in range(int(timeout_s / 0.1)):
        answer = await api.get(f"/comfy/api/userdata/{path.replace('/', '%2F')}",
                               headers={"Authorization": f"Bearer {key}"})
        if answer.status_code == 200:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{path} not saved for the user within {timeout_s} s")
