"""The web dashboard end to end, in headless Chromium (Debian's ``chromium``, driven by Playwright): sign in with a
key, submit a workflow from the page and watch its progress and output image arrive, retry and cancel tasks, read a
failure by node, drain a backend from the pool view, and read its log; at desktop and phone widths. Screenshots go
to ``artifacts/dashboard/`` (or ``$COMFYART_ARTIFACTS/dashboard``).

The page must raise no JavaScript error and no console error (a Content-Security-Policy violation is one)."""
from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Locator, Page, async_playwright, expect
from pydantic import SecretStr

from tests.support.daemon import make_settings, running_daemon, wait_for_pool, wait_for_tasks
from tests.support.graphs import basic_graph, text_to_image_graph
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


# what the header and the live indicator show, every text they take, from the page's first moment
WATCH_HEADER = """
new MutationObserver((_, first) => {
  const summary = document.getElementById("queue-summary"), live = document.getElementById("live");
  if (!summary || !live) return;
  first.disconnect();
  window.seen = { summary: [summary.textContent], live: [live.textContent] };
  const follow = (element, texts) => new MutationObserver(() => texts.push(element.textContent))
    .observe(element, { childList: true, characterData: true, subtree: true });
  follow(summary, window.seen.summary);
  follow(live, window.seen.live);
}).observe(document, { childList: true, subtree: true });
"""

# does the search box's placeholder fit in the box?
PLACEHOLDER_FITS = """input => {
  const style = getComputedStyle(input), context = document.createElement("canvas").getContext("2d");
  context.font = `${style.fontSize} ${style.fontFamily}`;
  const room = input.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  return context.measureText(input.placeholder).width <= room;
}"""

PROMPTS = ["a red barn at dusk", "a koi pond in the rain", "a neon city street", "an old map of the sea"]


async def test_a_busy_list_reads_at_a_glance_and_the_header_counts_it(tmp_path: Path, redis_url, browser: Browser):
    problems: list[str] = []
    async with running_daemon(settings_for(tmp_path, redis_url)) as api:
        api.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        await wait_for_pool(api, lambda p: sum(b["status"] == "healthy" for b in p["backends"]) == 2)
        base = str(api.base_url).rstrip("/")
        # five long tasks on two backends: two run, three wait. One is a raw graph, whose text is its prompt
        graph = (await api.post("/api/tasks", json={"prompt": text_to_image_graph(steps=600)})).json()["id"]
        runs = [(await api.post("/api/workflows/text-to-image/run",
                                json={"params": {"prompt": prompt, "steps": 150, "width": 64}})).json()["id"]
                for prompt in PROMPTS]
        for _ in range(100):
            if (await api.get("/api/tasks?status=running")).json()["total"] == 2:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.5)  # the stats sampler has seen them too

        # the header says it is connecting until the first real counts, and then counts what the list shows
        page = await open_page(browser, DESKTOP, problems)
        await page.add_init_script(WATCH_HEADER)
        await sign_in(page, base, ADMIN_KEY)
        rows = page.locator("#task-list .task[data-layout=row]")
        await expect(rows).to_have_count(5)
        await expect(page.locator("#queue-summary")).to_have_text("3 waiting · 2 running")
        await expect(rows.locator("[data-role=status]", has_text="pending")).to_have_count(3)
        seen = await page.evaluate("window.seen")
        assert set(seen["summary"]) <= {"connecting…", "", "3 waiting · 2 running"}, seen
        assert seen["summary"][0] == "connecting…" and "offline" not in seen["live"], seen

        # one row a task: its prompt (a raw graph's text included) and its parameters
        first = page.locator(f".task[data-id='{runs[0]}']")
        await expect(first.locator("[data-role=prompt]")).to_have_text(PROMPTS[0])
        await expect(first.locator("[data-role=params]")).to_contain_text("steps 150")
        await expect(page.locator(f".task[data-id='{graph}'] [data-role=prompt]")).to_have_text("a lighthouse")
        heights = await rows.evaluate_all("rows => rows.map(row => row.getBoundingClientRect().height)")
        assert max(heights) <= 56, heights  # some 14 rows a screen, where cards gave four
        await shot(page, "tasks-list")

        # the search box shows all of its hint, and finds a task by its prompt
        search = page.locator("#filter-text")
        assert await search.evaluate(PLACEHOLDER_FITS), await search.get_attribute("placeholder")
        await search.fill("koi")
        await expect(rows).to_have_count(1)
        await expect(rows.locator("[data-role=prompt]")).to_have_text(PROMPTS[1])
        await search.fill("")

        # a row opens as a card, and closes again; the cards layout is remembered
        await first.locator("[data-role=prompt]").click()
        await expect(page.locator(f".task[data-id='{runs[0]}'][data-layout=card]")).to_be_visible()
        await page.locator(f".task[data-id='{runs[0]}'] .title").click()
        await expect(page.locator(f".task[data-id='{runs[0]}'][data-layout=row]")).to_be_visible()
        await page.click("#task-layout button[data-layout=cards]")
        await expect(page.locator("#task-list .task[data-layout=card]")).to_have_count(5)
        await page.reload()
        await expect(page.locator("#task-list .task[data-layout=card]")).to_have_count(5)
        await shot(page, "tasks-cards")
        await page.click("#task-layout button[data-layout=list]")
        await expect(rows).to_have_count(5)

        # the form opens on a workflow that needs no file, and shows what an empty field runs with
        await page.click("nav a[data-view=submit]")
        await expect(page.locator("#submit-params[data-workflow='text-to-image']")).to_have_count(1)
        await expect(page.locator("#submit-workflow")).to_have_value("text-to-image")
        for param, shown in (("steps", "20"), ("cfg", "7"), ("seed", "random"), ("height", "512"),
                             ("negative", "blurry, low quality"), ("filename_prefix", "comfyart")):
            await expect(page.locator(f"#param-{param}")).to_have_attribute("placeholder", shown)
        await expect(page.locator("#param-sampler option").first).to_have_text("euler (default)")
        await shot(page, "submit-defaults")
        await choose_workflow(page, "image-to-image")
        await expect(page.locator("#param-denoise")).to_have_attribute("placeholder", "0.6")  # the graph's own
        await expect(page.locator("#param-steps")).to_have_attribute("placeholder", "20")

        # the pool's autoscaler line follows the decisions as they come, even with the pool's figures frozen
        frozen = (await api.get("/api/pool")).json()
        await page.route("**/api/pool", lambda route: route.fulfill(json=frozen))
        await page.click("nav a[data-view=pool]")
        await expect(page.locator("#autoscaler")).to_contain_text(frozen["autoscaler"]["reason"])
        for task_id in runs[2:]:
            await api.delete(f"/api/tasks/{task_id}")
        for _ in range(100):
            decision = (await api.get("/api/pool")).json()["autoscaler"]
            if decision["reason"] != frozen["autoscaler"]["reason"] and "load 3" in decision["reason"]:
                break
            await asyncio.sleep(0.1)
        await expect(page.locator("#autoscaler")).to_contain_text(decision["reason"], timeout=10_000)
        await shot(page, "pool-autoscaler")
        await page.unroute("**/api/pool")
        for task_id in [graph, *runs[:2]]:
            await api.delete(f"/api/tasks/{task_id}")
        assert problems == []
