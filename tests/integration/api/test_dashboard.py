"""The web dashboard end to end, in headless Chromium (Debian's ``chromium``, driven by Playwright): sign in with a
key, submit a workflow from the page and watch its progress and output image arrive, retry and cancel tasks, read a
failure by node, drain a backend from the pool view, and read its log; at desktop and phone widths. Screenshots go
to ``artifacts/dashboard/`` (or ``$COMFYART_ARTIFACTS/dashboard``).

The page must raise no JavaScript error and no console error (a Content-Security-Policy violation is one)."""
from __future__ import annotations

from pathlib import Path

from playwright.async_api import Browser, expect
from pydantic import SecretStr

from tests.support.daemon import running_daemon, wait_for_pool, wait_for_tasks
from tests.support.dashboard import (
    ADMIN_KEY,
    CLIENT_KEY,
    DESKTOP,
    PHONE,
    browser,
    choose_workflow,
    open_page,
    run_from_form,
    settings_for,
    shot,
    sign_in,
)
from tests.support.graphs import basic_graph

__all__ = ["browser"]  # the fixture


async def test_submit_watch_retry_cancel_and_drain_from_the_page(tmp_path: Path, redis_url, browser: Browser):
    problems: list[str] = []
    async with running_daemon(settings_for(tmp_path, redis_url)) as api:
        api.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        await wait_for_pool(api, lambda p: sum(b["status"] == "healthy" for b in p["backends"]) == 2)
        base = str(api.base_url).rstrip("/")
        page = await open_page(browser, DESKTOP, problems)

        # a wrong key is refused on the page, the right one signs in
        await page.goto(base + "/")
        await page.fill("#login-key", "not-a-key")
        await page.click("#login-form button[type=submit]")
        await expect(page.locator("#login-error")).to_contain_text("not valid")
        await sign_in(page, base, ADMIN_KEY)

        # submit a workflow from the form, and watch it run: progress moves, then the output image appears
        await page.click("nav a[data-view=submit]")
        await choose_workflow(page, "text-to-image")
        await page.fill("#param-prompt", "a lighthouse on a cliff at dawn")
        await page.fill("#param-steps", "25")
        await page.fill("#param-width", "256")
        card = await run_from_form(page)
        await expect(card.locator("[data-role=status]")).to_have_text("running", timeout=20_000)
        await expect(card.locator("[role=progressbar]")).not_to_have_attribute("aria-valuenow", "0")
        seen = int(await card.locator("[role=progressbar]").get_attribute("aria-valuenow"))
        assert 0 < seen < 100, seen  # a value between the ends: the bar moved while the task ran
        await shot(page, "submit-running")
        await expect(card.locator("[data-role=status]")).to_have_text("completed", timeout=30_000)
        thumb = card.locator("img.thumb")
        await expect(thumb).to_have_count(1)
        await page.wait_for_function("img => img.complete && img.naturalWidth === 256",
                                     arg=await thumb.element_handle())
        task_id = await card.get_attribute("data-id")
        record = (await api.get(f"/api/tasks/{task_id}")).json()
        assert record["status"] == "completed" and record["params"]["prompt"] == "a lighthouse on a cliff at dawn"
        await shot(page, "submit-completed")
        await thumb.click()  # full size in a dialog
        await expect(page.locator("#lightbox")).to_be_visible()
        await page.wait_for_function("() => document.querySelector('#lightbox img').naturalWidth === 256")
        await shot(page, "output-full-size")
        await page.click("#lightbox button[value=close]")

        # image to image: the picture is uploaded from the page with the run
        picture = tmp_path / "upload.png"
        picture.write_bytes((await api.get(f"/api/tasks/{task_id}/outputs/{record['outputs'][0]['filename']}")).content)
        await choose_workflow(page, "image-to-image")
        await page.set_input_files("#param-image", str(picture))
        await page.fill("#param-prompt", "as an oil painting")
        await page.fill("#param-denoise", "0.5")
        painted = await run_from_form(page)
        await expect(painted.locator("[data-role=status]")).to_have_text("completed", timeout=30_000)
        await page.wait_for_function("img => img.complete && img.naturalWidth > 0",
                                     arg=await painted.locator("img.thumb").element_handle())
        painted_record = (await api.get(f"/api/tasks/{await painted.get_attribute('data-id')}")).json()
        assert painted_record["workflow"] == "image-to-image" and painted_record["params"]["denoise"] == 0.5
        assert set(painted_record["params"]["image"]) == {"input"}  # stored by content, then sent to the backend

        # a failed task shows its error with the failing node; retry queues it again as a new task
        failing = (await api.post("/api/tasks", json={"prompt": basic_graph()})).json()["id"]
        await wait_for_tasks(api, [failing])
        await page.click("nav a[data-view=tasks]")
        failed_card = page.locator(f".task[data-id='{failing}']")
        await expect(failed_card.locator("[data-role=error]")).to_contain_text("ImageInvert")
        await expect(failed_card.locator("[data-role=error]")).to_contain_text("2")
        await failed_card.get_by_role("button", name="Retry").click()
        retried = page.locator(f".task:has-text('retry of {failing[-6:]}')")
        await expect(retried.locator("[data-role=status]")).to_have_text("failed", timeout=20_000)
        again = await retried.get_attribute("data-id")
        assert (await api.get(f"/api/tasks/{again}")).json()["retry_of"] == failing

        # cancel a long task from the list while it runs
        long_task = (await api.post("/api/workflows/text-to-image/run",
                                    json={"params": {"prompt": "slow", "steps": 150, "width": 64}})).json()["id"]
        long_card = page.locator(f".task[data-id='{long_task}']")
        await expect(long_card.locator("[data-role=status]")).to_have_text("running", timeout=20_000)
        await long_card.get_by_role("button", name="Cancel").click()
        await expect(long_card.locator("[data-role=status]")).to_have_text("canceled", timeout=20_000)
        assert (await api.get(f"/api/tasks/{long_task}")).json()["status"] == "canceled"

        # the charts drew the samples of this run
        await page.wait_for_function("() => Number(document.querySelector('#chart-depth').dataset.points) > 2")
        await page.wait_for_function("() => Number(document.querySelector('#chart-throughput').dataset.points) > 0")
        await shot(page, "tasks-desktop")

        # the pool: both backends with their GPUs; read a log, then drain one
        await page.click("nav a[data-view=pool]")
        backends = page.locator("#backends .backend")
        await expect(backends).to_have_count(2)
        await expect(page.locator("#hosts")).to_contain_text("0, 1")
        # the control plane: this daemon, alone, leads under the epoch /api/cluster names
        cluster = (await api.get("/api/cluster")).json()
        replica = page.locator("#replicas .replica")
        await expect(replica).to_have_count(1)
        await expect(replica.locator("[data-role=role]")).to_have_text("leader")
        await expect(replica).to_contain_text(f"epoch{cluster['leader']['epoch']}, leading since")
        await expect(page.locator("#replicas-line")).to_have_text(
            f"1 replica; {cluster['leader']['name']} leads (epoch {cluster['leader']['epoch']}).")
        first = backends.first
        backend_id = await first.get_attribute("data-backend")
        created = await first.get_attribute("data-created")
        await first.get_by_role("button", name="Logs").click()
        await expect(page.locator("#log-dialog pre")).to_contain_text("emulator", timeout=10_000)
        await shot(page, "pool-log")
        await page.click("#log-dialog button[value=close]")
        await shot(page, "pool-desktop")
        before = [b["created_ms"] for b in (await api.get("/api/pool")).json()["backends"]]
        await first.get_by_role("button", name="Drain").click()
        # an idle backend drains at once and is stopped; the autoscaler brings the pool back to its minimum with a
        # new process (which may reuse the freed port, and so the id): the page shows the new one
        drained = page.locator(f"#backends .backend[data-backend='{backend_id}'][data-created='{created}']")
        await expect(drained).to_have_count(0, timeout=20_000)
        await expect(page.locator("#backends .backend[data-status=healthy]")).to_have_count(2, timeout=30_000)
        pool = (await api.get("/api/pool")).json()
        assert pool["counters"]["stopped"] == 1 and pool["counters"]["started"] == 3, pool["counters"]
        after = [b["created_ms"] for b in pool["backends"]]
        assert after.count(int(created)) == before.count(int(created)) - 1, (before, after)  # the drained one left
        await shot(page, "pool-after-drain")

        # phone width: nothing wider than the screen
        phone = await open_page(browser, PHONE, problems)
        await sign_in(phone, base, ADMIN_KEY)
        for view in ("tasks", "submit", "pool"):
            await phone.click(f"nav a[data-view={view}]")
            await expect(phone.locator(f"#view-{view}")).to_be_visible()
            await phone.wait_for_timeout(300)
            width = await phone.evaluate("document.documentElement.scrollWidth")
            assert width <= PHONE["width"], f"{view}: the page is {width} px wide on a {PHONE['width']} px phone"
            await shot(phone, f"{view}-phone")
        assert problems == []


async def test_a_client_key_sees_its_own_tasks_and_no_pool(tmp_path: Path, redis_url, browser: Browser):
    problems: list[str] = []
    async with running_daemon(settings_for(tmp_path, redis_url)) as api:
        base = str(api.base_url).rstrip("/")
        theirs = (await api.post("/api/tasks", json={"prompt": basic_graph()},
                                 headers={"Authorization": f"Bearer {ADMIN_KEY}"})).json()["id"]
        page = await open_page(browser, DESKTOP, problems)
        await sign_in(page, base, CLIENT_KEY)
        await expect(page.locator("nav a[data-view=pool]")).to_be_hidden()
        await page.click("nav a[data-view=submit]")
        await choose_workflow(page, "text-to-image")
        await page.click("#submit-run")  # the prompt is required: the form itself says so
        assert await page.locator("#submitted .task").count() == 0
        await page.fill("#param-prompt", "mine")
        await page.fill("#param-steps", "2")
        await page.fill("#param-width", "64")
        mine = await run_from_form(page)
        await expect(mine.locator("[data-role=status]")).to_have_text("completed", timeout=30_000)
        await page.click("nav a[data-view=tasks]")
        await expect(page.locator("#task-list .task")).to_have_count(1)
        await expect(page.locator(f".task[data-id='{theirs}']")).to_have_count(0)
        # a refusal from the API reaches the page as its one-line reason
        await page.evaluate("location.hash = '#submit'")
        await choose_workflow(page, "text-to-image")
        await page.fill("#param-prompt", "too wide")
        await page.evaluate("document.querySelector('#param-width').removeAttribute('max')")
        await page.fill("#param-width", "99999")
        await page.click("#submit-run")
        await expect(page.locator("#submit-error")).to_contain_text("width")
        await expect(page.locator("#submit-error")).to_contain_text("422")
        await shot(page, "client-refusal")
        assert problems == []


async def test_a_basic_auth_admin_user_gets_the_browsers_prompt_and_live_events(tmp_path: Path, redis_url,
                                                                                browser: Browser):
    problems: list[str] = []
    settings = settings_for(tmp_path, redis_url)
    settings.auth.admin_user = "ops"
    settings.auth.admin_password = SecretStr("correct horse battery staple")
    async with running_daemon(settings) as api:
        base = str(api.base_url).rstrip("/")
        context = await browser.new_context(viewport=DESKTOP, http_credentials={
            "username": "ops", "password": "correct horse battery staple"})
        page = await open_page(context, None, problems, expected=())  # no refusal at all: the browser had the user
        await page.goto(base + "/")
        # the browser answered the page's challenge, and sends the user with every request, the WebSocket's too
        await expect(page.locator("#live")).to_have_text("live")
        await expect(page.locator("#login")).to_be_hidden()
        await page.click("nav a[data-view=pool]")
        await expect(page.locator("#backends .backend")).to_have_count(2, timeout=20_000)
        await context.close()
        assert problems == []
