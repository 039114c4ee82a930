"""The dashboard's task list with a busy fleet, in headless Chromium: one row a task with its prompt and
parameters, the header's counts from the first moment, the search box, the layouts, the form's defaults, and the
pool's autoscaler line as decisions come. Screenshots go to ``artifacts/dashboard/``."""
from __future__ import annotations

import asyncio
from pathlib import Path

from playwright.async_api import Browser, expect

from tests.support.daemon import make_settings, running_daemon, wait_for_pool
from tests.support.dashboard import ADMIN_KEY, DESKTOP, browser, choose_workflow, open_page, settings_for, shot, sign_in
from tests.support.graphs import text_to_image_graph

__all__ = ["browser"]  # the fixture


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


SPEC_GRAPH = {"3": {"class_type": "KSampler", "inputs": {"steps": 30, "cfg": 6.5, "seed": 5, "model": ["4", 0]}}}


async def test_the_pages_pure_helpers(tmp_path: Path, redis_url, browser: Browser):
    """summary.js decides what a row says, what a field defaults to, which workflow the form opens on, and how the
    header's counts move between two counts; checked in the browser that runs it."""
    problems: list[str] = []
    async with running_daemon(make_settings(tmp_path, redis_url)) as api:
        page = await open_page(browser, DESKTOP, problems)
        await page.goto(str(api.base_url).rstrip("/") + "/")
        run = lambda expression, arg=None: page.evaluate(  # noqa: E731
            f"async (arg) => {{ const m = await import('/ui/summary.js'); return {expression}; }}", arg)
        counts = {"waiting": 2, "running": 1, "detail": "x"}
        for previous, status, expected in (
                (None, "pending", (3, 1)), ("pending", "running", (1, 2)), ("running", "completed", (2, 0)),
                ("pending", "canceled", (1, 1)), ("pending", "pending", (2, 1)), ("running", "running", (2, 1)),
                ("completed", "completed", (2, 1)), (None, "completed", (2, 1))):
            shifted = await run("m.shiftCounts(arg.counts, arg.previous, arg.status)",
                                {"counts": counts, "previous": previous, "status": status})
            assert (shifted["waiting"], shifted["running"]) == expected, (previous, status)
        assert await run("m.shiftCounts(null, 'pending', 'running')") is None  # nothing to move before a count
        assert await run("m.shiftCounts({waiting: 0, running: 0}, 'running', 'completed')") == {"waiting": 0,
                                                                                                 "running": 0}
        defaults = await run("""[m.paramDefault("steps", {type: "int", target: [{node: "3", input: "steps"}],
                                                          default: 20}, arg),
            m.paramDefault("steps", {type: "int", target: [{node: "3", input: "steps"}]}, arg),
            m.paramDefault("cfg", {type: "float", target: [{node: "3", input: "cfg"}]}, arg),
            m.paramDefault("seed", {type: "int", target: [{node: "3", input: "seed"}]}, arg),
            m.paramDefault("model", {type: "string", target: [{node: "3", input: "model"}]}, arg),
            m.paramDefault("gone", {type: "int", target: [{node: "9", input: "x"}]}, arg),
            m.paramDefault("flag", {type: "bool", target: [{node: "3", input: "x"}], default: false}, arg)]""",
                             SPEC_GRAPH)
        assert defaults == [20, 30, 6.5, "random", None, None, False]
        image = {"type": "image", "required": True}
        assert await run("m.firstRunnable(arg).name", [{"name": "a-edit", "params": {"image": image}},
                                                       {"name": "b-draw", "params": {"prompt": {"type": "string"}}}]) \
            == "b-draw"
        assert await run("m.firstRunnable(arg).name", [{"name": "only", "params": {"image": image}}]) == "only"
        assert await run("m.firstRunnable([])") is None
        summary = await run("m.paramsSummary(arg)", {"seed": 123, "prompt": "p", "width": 64, "height": 96,
                                                     "negative": "n", "tiled": True, "image": {"input": "abc"},
                                                     "style": "x" * 40, "cfg": 1 / 3})
        assert summary == f"64×96 · tiled on · image upload · style {'x' * 23}… · cfg 0.333 · seed 123"
        task = {"id": "01ABC", "workflow": "text-to-image", "params": {"prompt": "a Red barn", "steps": 4},
                "backend": "proc:1", "error": None}
        assert [await run("m.matchesText(arg.task, arg.text)", {"task": task, "text": text})
                for text in ("red barn", "steps 4", "01abc", "proc:1", "text-to", "", "koi")] == [True] * 6 + [False]
        assert await run("m.promptText({prompt_text: 'from the graph', params: {prompt: 'p'}})") == "from the graph"
        assert await run("m.promptText({params: {positive: ' a boat '}})") == "a boat"
        assert await run("m.promptText({params: null})") == ""
        assert problems == []
