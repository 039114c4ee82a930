"""What the backends hold, on the dashboard, in headless Chromium: each backend's inventory summary with what only it
has, its inventory read again from its card after a model is copied onto it, the fleet's models panel, and a queued
task that waits for a model only a disabled backend has saying so on its row and on its card."""
from __future__ import annotations

from pathlib import Path

from playwright.async_api import Browser, expect

from comfyart.emulator.engine import DEFAULT_MODELS
from tests.support.daemon import make_settings, running_daemon, wait_for_pool, wait_for_tasks
from tests.support.dashboard import ADMIN_KEY, CLIENT_KEY, DESKTOP, browser, open_page, shot, sign_in
from tests.support.graphs import text_to_image_graph

__all__ = ["browser"]  # the fixture
DEFAULTS = sum(len(names) for names in DEFAULT_MODELS.values())  # the editor's default models: on every emulator


async def test_the_pool_shows_inventories_and_a_blocked_task_says_why(tmp_path: Path, redis_url, emulator,
                                                                      browser: Browser):
    one = emulator("--checkpoints", "one.safetensors,shared.safetensors", "--node-seconds", "0.05")
    two = emulator("--checkpoints", "two.safetensors,shared.safetensors", "--without-nodes", "ImageInvert",
                   "--node-seconds", "0.05")
    settings = make_settings(tmp_path, redis_url, static_backends=[{"name": "one", "url": one.url},
                                                                   {"name": "two", "url": two.url}],
                             pool={"inventory_refresh_s": 0},
                             auth={"keys": [{"name": "ops", "role": "admin", "key": ADMIN_KEY},
                                            {"name": "user", "key": CLIENT_KEY}]})
    problems: list[str] = []
    async with running_daemon(settings) as api:
        api.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        await wait_for_pool(api, lambda p: all(b["inventory"]["read"] and b["status"] == "healthy"
                                               for b in p["backends"]))
        base = str(api.base_url).rstrip("/")
        page = await open_page(browser, DESKTOP, problems)
        await sign_in(page, base, ADMIN_KEY)

        # each backend's card: its counts, and what only it has
        await page.click("nav a[data-view=pool]")
        card_one = page.locator(".backend[data-backend='static:one']")
        card_two = page.locator(".backend[data-backend='static:two']")
        await expect(card_one.locator("[data-role=inventory]")).to_contain_text(f"· {2 + DEFAULTS} models")
        await expect(card_one.locator("[data-role=only-here]")).to_have_text("only here: one.safetensors, ImageInvert")
        await expect(card_two.locator("[data-role=only-here]")).to_have_text("only here: two.safetensors")

        # a model copied onto backend two shows once its card's button reads it again
        (two.base_dir / "models" / "checkpoints" / "late.safetensors").write_bytes(b"")
        await card_two.locator("button[data-action=refresh]").click()
        await expect(card_two.locator("[data-role=only-here]")).to_have_text(
            "only here: late.safetensors, two.safetensors")
        await expect(page.locator(".toast.info")).to_contain_text(
            f"static:two: inventory read, {3 + DEFAULTS} models")

        # the fleet's models, each with the backends that hold it
        await page.click("#models-panel summary")
        await expect(page.locator("#models tr[data-model]")).to_have_count(4 + DEFAULTS)
        shared = page.locator("#models tr[data-model='shared.safetensors'] [data-backend]")
        await expect(shared).to_have_text(["static:one", "static:two"])
        await expect(page.locator("#models tr[data-model='late.safetensors']")).to_contain_text("checkpoints")
        await page.fill("#models-find", "late")
        await expect(page.locator("#models tr[data-model]")).to_have_count(1)
        await expect(page.locator("#models-count")).to_have_text("1 model")
        await shot(page, "pool-inventories")

        # a task only the disabled backend two could run waits, and its row and card say why
        assert (await api.post("/api/pool/backends/static:two/disable")).status_code == 200
        graph = text_to_image_graph(steps=2)
        graph["4"]["inputs"]["ckpt_name"] = "two.safetensors"
        created = await api.post("/api/tasks", json={"prompt": graph})
        assert created.status_code == 201, created.text
        task_id = created.json()["id"]
        await page.click("nav a[data-view=tasks]")
        row = page.locator(f"#task-list .task[data-id='{task_id}']")
        await expect(row.locator("[data-role=waits]")).to_have_text(
            "waits: only static:two (not taking work) could run it", timeout=20_000)
        await shot(page, "task-waits")
        await row.click()  # the card, expanded from the row, says it too
        await expect(page.locator(f"#task-list .task[data-id='{task_id}'][data-layout=card] [data-role=waits]")
                     ).to_contain_text("static:two")

        # backend two back at work: the task runs, and the line goes
        assert (await api.post("/api/pool/backends/static:two/enable")).status_code == 200
        [record] = await wait_for_tasks(api, [task_id])
        assert record["status"] == "completed" and record["backend"] == "static:two"
        await expect(page.locator(f"#task-list .task[data-id='{task_id}'] [data-role=waits]")).to_have_count(
            0, timeout=20_000)
        await page.close()
    assert problems == []
