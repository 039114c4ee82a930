"""ComfyUI's web editor on a fleet: how long the page takes to be ready, a prompt to its first progress and its
image, and what /object_info costs, through comfyart with 8 emulated backends.

    python3 bench/editor.py [--loads N] [--clicks N] [--prompts N] [--requests N] [--cold N] [--backends K]
                           [--preview-method none|auto]

1. page ready   headless Chromium (Debian's, driven by Playwright) opens ``/comfy/`` in a fresh browser context
                (nothing cached), --loads times, then as often in a browser with a profile (its disk cache warm).
                The editor is ready (``READY_JS``) when ``window.app.graph`` exists, every node class of the pool's
                ``/object_info`` is registered with LiteGraph (the node library is loaded), the page's WebSocket is
                open and the Run button is on the page and enabled; the page itself notes the moment
                (``performance.now()``, from navigation start), polling every 10 ms from a script run before the
                page's own. Also the bytes the page transferred by then.
2. queue        the page's own Run button, --clicks times, on the text-to-image graph (loaded with
                ``app.loadApiJson``, fitted in view: the canvas loads a node's image only when it draws the node):
                click to the first ``progress`` event its API client emits, to ``executed``, and to the SaveImage
                node's image loaded (the resource timing's ``responseEnd`` of its ``/api/view?type=output``; not
                the job panel's thumbnail, which the page shows seconds later), all in page time. Then a client that
                does what the page does on Run (its socket open with the feature_flags handshake; ``POST
                /api/prompt`` with the body the page sent: its client_id, extra_pnginfo.workflow, preview_method,
                a new seed each time; the first ``progress`` frame, ``executed``, then ``GET /api/view`` of its
                image), --prompts times, taking turns straight at one of the emulators (``/api/prompt``, ``/ws``)
                and through comfyart (``/comfy/api/prompt``, ``/comfy/ws``).
3. object_info  ``GET /comfy/api/object_info``: the first request after the daemon read every backend's inventory
                (a new daemon each of --cold times), then --requests repeats; its size, whether it is sent
                compressed when asked (``Accept-Encoding: gzip``), and what gzip would make of it. Over the
                emulators (a small document), and over K servers of bench/object_info_fleet.py (2 MB each, as a
                ComfyUI with custom node packs answers; their model lists differ, so the merge is larger).

Auth is off (everything on loopback). Chromium may reach 127.0.0.1 only: ``--host-resolver-rules`` fails every
other name and every other request goes to a proxy that is not there (the page asks api.comfy.org for release
notes); the hosts it tried are reported. Backends are one emulator process serving K emulators (--step-seconds
0.05, 4 KSampler steps; --preview-method none, ComfyUI's default, unless told).
Prints a table and writes bench/results/editor.json.
"""
from __future__ import annotations

import argparse
import asyncio
import copy
import gzip
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlparse

import aiohttp
import httpx
from playwright.async_api import Browser, BrowserContext, Page, Playwright, Request, async_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import RESULTS, ROOT, percentile  # noqa: E402
from scheduling import Bench, free_port_block, sampler_graph  # noqa: E402

STEP_S, STEPS = 0.05, 4
EMULATOR_FLAGS = ("--step-seconds", str(STEP_S), "--node-seconds", "0", "--model-load-seconds", "0")
CHROMIUM = "/usr/bin/chromium"
# every name but 127.0.0.1 fails to resolve, and every request elsewhere goes to a proxy that is not there (no
# page.route: Playwright turns the HTTP cache off in a context that routes, and the warm figure needs it)
LOOPBACK_ONLY = ("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--proxy-server=http://127.0.0.1:9",
                 "--proxy-bypass-list=127.0.0.1")
CHROMIUM_ARGS = ["--no-sandbox", *LOOPBACK_ONLY]
VIEWPORT = {"width": 1366, "height": 900}
# run before the page's scripts: note when the editor first is ready (CLASSES: the pool's node classes)
READY_JS = """
(() => {
  const ready = () => window.app?.graph && window.LiteGraph
    && CLASSES.every((c) => c in window.LiteGraph.registered_node_types)
    && window.app.api?.socket?.readyState === 1
    && document.querySelector('[data-testid="queue-button"]:not([disabled])');
  const poll = setInterval(() => {
    if (ready()) { window.__benchReady = performance.now(); clearInterval(poll); }
  }, 10);
})();
"""
# before a click: note the click, the first progress event, `executed`, and the output image's arrival
WATCH_RUN_JS = """
() => {
  const run = window.__benchRun = {};
  document.addEventListener('click', () => { run.click ??= performance.now(); }, {capture: true, once: true});
  window.app.api.addEventListener('progress', () => { run.progress ??= performance.now(); });
  window.app.api.addEventListener('executed', () => { run.executed ??= performance.now(); });
  new PerformanceObserver((list) => {
    for (const e of list.getEntries())
      if (e.name.includes('/api/view') && e.name.includes('type=output') && !e.name.includes('&t=')
          && e.startTime >= (run.click ?? 0))
        run.image ??= e.responseEnd;
  }).observe({type: 'resource'});
}
"""
SET_SEED_JS = """
(seed) => {
  const node = window.app.graph.nodes.find((n) => n.type === 'KSampler');
  node.widgets.find((w) => w.name === 'seed').value = seed;
  const control = node.widgets.find((w) => w.name === 'control_after_generate');
  if (control) control.value = 'fixed';
}
"""
TRANSFERRED_JS = """() => [window.__benchReady, performance.getEntriesByType('navigation')
  .concat(performance.getEntriesByType('resource')).reduce((sum, e) => sum + (e.transferSize ?? 0), 0)]"""
SHOWN_JS = "() => window.app.graph.nodes.find((n) => n.type === 'SaveImage').imgs?.[0]?.naturalWidth > 0"


def ms(values: list[float]) -> dict[str, float]:
    """Median and p90 of seconds, in ms."""
    return {"p50_ms": round(percentile(values, 0.5) * 1000, 1), "p90_ms": round(percentile(values, 0.9) * 1000, 1)}


# ------------------------------------------------------------------ the fleet and the daemon
def wait_inventories(api: str, count: int, timeout_s: float = 60) -> None:
    """Until every backend is healthy with its inventory read."""
    deadline = time.monotonic() + timeout_s
    while True:
        backends = httpx.get(f"{api}/api/pool", timeout=30).json()["backends"]
        if sum(b["status"] == "healthy" and b["inventory"]["read"] for b in backends) >= count:
            return
        if time.monotonic() > deadline:
            raise TimeoutError("backends not healthy with their inventories")
        time.sleep(0.05)


def start_daemon(rig: Bench, redis_url: str, urls: list[str], name: str) -> str:
    _, api = rig.daemon(redis_url, urls, name)
    wait_inventories(api, len(urls))
    return str(api)


# ------------------------------------------------------------------ 3. /object_info
def stop_last(rig: Bench) -> None:
    """The process started last (a daemon, a fleet): stopped, before the next one starts."""
    process = rig.processes.pop()
    process.terminate()
    process.wait(20)


def synthetic_fleet(rig: Bench, count: int) -> list[str]:
    """``count`` servers of bench/object_info_fleet.py: a 2 MB ``/object_info`` each, model lists differing."""
    port = free_port_block(count)
    rig.spawn([sys.executable, str(ROOT / "bench" / "object_info_fleet.py"), "--port", str(port), "--count",
               str(count), "--kind", "different"], port + count - 1)
    return [f"http://127.0.0.1:{port + i}" for i in range(count)]


def object_info_figures(rig: Bench, redis_url: str, urls: list[str], cold: int, requests: int) -> tuple[dict, str]:
    """Cold (a new daemon each time, first request once its inventories are read) and repeated requests; the API
    of the last daemon, left running."""
    firsts, api = [], ""
    for i in range(cold):
        if api:
            stop_last(rig)  # one daemon at a time on the backends
        api = start_daemon(rig, redis_url, urls, f"editor-{len(rig.processes)}-{i}")
        start = time.perf_counter()
        httpx.get(f"{api}/comfy/api/object_info", timeout=60).raise_for_status()
        firsts.append(time.perf_counter() - start)
    repeats = []
    with httpx.Client(base_url=api, timeout=60) as client:
        for _ in range(requests):
            start = time.perf_counter()
            answer = client.get("/comfy/api/object_info")
            repeats.append(time.perf_counter() - start)
        zipped = client.get("/comfy/api/object_info", headers={"Accept-Encoding": "gzip"})
    raw = answer.content
    figures = {"backends": len(urls), "classes": len(answer.json()), "cold": {"runs": cold, **ms(firsts)},
               "cached": {"requests": requests, **ms(repeats)}, "bytes": len(raw),
               "content_encoding_asked_gzip": zipped.headers.get("content-encoding", "identity"),
               "bytes_if_gzipped": len(gzip.compress(raw, 6))}
    return figures, api


def large_documents(rig: Bench, redis_url: str, args: argparse.Namespace) -> tuple[dict, dict, list[str]]:
    """/object_info and the page's start over servers of 2 MB documents (a ComfyUI with custom node packs and a
    models volume): their figures, and the hosts the page tried beyond loopback."""
    urls = synthetic_fleet(rig, args.backends)
    figures, api = object_info_figures(rig, redis_url, urls, args.cold, args.requests)
    browsed, _ = asyncio.run(browser_sections(api, args.loads, 0))
    stop_last(rig)  # its daemon
    stop_last(rig)  # the servers
    return figures, browsed["page_ready"], browsed["hosts_refused"]


# ------------------------------------------------------------------ 1. page ready
class Browsing:
    """One Chromium for the run; contexts that reach loopback only and note when the editor is ready."""

    def __init__(self, playwright: Playwright, browser: Browser, base: str, classes: list[str]) -> None:
        self.playwright, self.browser, self.base = playwright, browser, base
        self.ready_js = READY_JS.replace("CLASSES", json.dumps(classes))
        self.refused: set[str] = set()

    async def context(self) -> BrowserContext:
        """A fresh context: nothing cached (its cache lives in memory, too small for the page's 11 MB script)."""
        return await self._watched(await self.browser.new_context(viewport=VIEWPORT))

    async def profile(self, folder: Path) -> BrowserContext:
        """A browser with a profile in ``folder``: a disk cache, as a user's browser has."""
        return await self._watched(await self.playwright.chromium.launch_persistent_context(
            folder, executable_path=CHROMIUM, args=CHROMIUM_ARGS, viewport=VIEWPORT))

    async def _watched(self, context: BrowserContext) -> BrowserContext:
        await context.add_init_script(self.ready_js)
        context.on("requestfailed", self._note_refused)
        return context

    def _note_refused(self, request: Request) -> None:
        host = urlparse(request.url).hostname or ""
        if host != "127.0.0.1":
            self.refused.add(host)

    async def open_editor(self, context: BrowserContext) -> tuple[Page, float, int]:
        """A new page of ``context`` at /comfy/: seconds from navigation start until the editor was ready, and the
        bytes it had transferred by then (what its cache spared is not counted)."""
        page = await context.new_page()
        await page.goto(f"{self.base}/comfy/")
        await page.wait_for_function("window.__benchReady !== undefined", timeout=60_000)
        ready, transferred = await page.evaluate(TRANSFERRED_JS)
        return page, float(ready) / 1000, int(transferred)


async def page_ready(browsing: Browsing, loads: int) -> dict[str, Any]:
    # an untimed first visit: a new user's first page opens the template browser and saves the tutorial as seen
    context = await browsing.context()
    page, _, _ = await browsing.open_editor(context)
    await page.wait_for_timeout(1500)
    await context.close()
    cold: list[tuple[float, int]] = []
    for _ in range(loads):
        context = await browsing.context()
        cold.append((await browsing.open_editor(context))[1:])
        await context.close()
    with tempfile.TemporaryDirectory(prefix="comfyart-bench-profile-") as folder:
        warm = await warm_loads(browsing, Path(folder), loads)
    return {"loads": loads, **{name: {**ms([s for s, _ in runs]), "kb_transferred_p50": round(
        percentile([b for _, b in runs], 0.5) / 1024)} for name, runs in (("cold_cache", cold), ("warm_cache", warm))}}


async def warm_loads(browsing: Browsing, folder: Path, loads: int) -> list[tuple[float, int]]:
    context = await browsing.profile(folder)
    warm: list[tuple[float, int]] = []
    for i in range(loads + 1):
        page, seconds, transferred = await browsing.open_editor(context)
        if i:  # the first visit fills the cache
            warm.append((seconds, transferred))
        await page.close()
    await context.close()
    return warm


# ------------------------------------------------------------------ 2. queue, in the page
async def clicks(browsing: Browsing, count: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Run button ``count`` times on the text-to-image graph (a new seed each); the figures and the body the
    page posted to /api/prompt."""
    context = await browsing.context()
    page, _, _ = await browsing.open_editor(context)
    posted: list[Any] = []
    page.on("request", lambda r: posted.append(r.post_data_json)
            if r.method == "POST" and r.url.endswith("/api/prompt") else None)
    await page.evaluate("(graph) => window.app.loadApiJson(graph, 'bench')", sampler_graph(0, STEPS))
    # the whole graph in view: the canvas loads a node's output image only when it draws the node
    await page.evaluate("() => window.app.extensionManager.command.execute('Comfy.Canvas.FitView')")
    to_progress, to_executed, to_image = [], [], []
    for i in range(count):
        await page.evaluate(SET_SEED_JS, 1000 + i)
        await page.evaluate(WATCH_RUN_JS)
        await page.click('[data-testid="queue-button"]')
        await page.wait_for_function("window.__benchRun.image !== undefined && window.__benchRun.progress"
                                     " !== undefined", timeout=30_000)
        run = await page.evaluate("window.__benchRun")
        assert await page.evaluate(SHOWN_JS), "the SaveImage node shows no image"
        to_progress.append((run["progress"] - run["click"]) / 1000)
        to_executed.append((run["executed"] - run["click"]) / 1000)
        to_image.append((run["image"] - run["click"]) / 1000)
        await page.wait_for_timeout(300)  # the prompt's end frames, before the next click
    await context.close()
    figures = {"clicks": count, "to_first_progress": ms(to_progress), "to_executed": ms(to_executed),
               "to_image_loaded": ms(to_image)}
    return figures, posted[0]


# ------------------------------------------------------------------ 2. queue, a client doing what the page does
class PageLikeClient:
    """One ComfyUI origin (an emulator's root, or comfyart's /comfy): its socket open as the page opens it."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session, self.base = session, base
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.sid = ""

    async def connect(self) -> None:
        self.ws = await self.session.ws_connect(self.base.replace("http", "ws", 1) + "/ws")
        self.sid = (await self.frame("status"))["sid"]
        await self.ws.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": True,
                                                                   "supports_manager_v4_ui": True,
                                                                   "supports_progress_text_metadata": True}})
        await self.frame("feature_flags")

    async def frame(self, kind: str, prompt_id: str | None = None) -> dict[str, Any]:
        """The data of the next text frame of ``kind`` (of ``prompt_id``), past any other frame."""
        assert self.ws is not None
        while True:
            message = await self.ws.receive(timeout=60)
            if message.type != aiohttp.WSMsgType.TEXT:
                if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    raise ConnectionError(f"{self.base}: the socket closed")
                continue
            frame = json.loads(message.data)
            data = frame.get("data") or {}
            if frame["type"] == kind and (prompt_id is None or data.get("prompt_id") == prompt_id):
                return dict(data)

    async def run(self, body: dict[str, Any]) -> tuple[float, float, float]:
        """POST /api/prompt with the page's ``body`` under this socket's client id: seconds to the first progress
        frame, to ``executed``, and to its image read through /api/view; then waits for the prompt's end."""
        start = time.perf_counter()
        async with self.session.post(f"{self.base}/api/prompt", json={**body, "client_id": self.sid}) as answer:
            answer.raise_for_status()
            prompt_id = (await answer.json())["prompt_id"]
        await self.frame("progress", prompt_id)
        progress = time.perf_counter() - start
        image = (await self.frame("executed", prompt_id))["output"]["images"][0]
        executed = time.perf_counter() - start
        async with self.session.get(f"{self.base}/api/view?{urlencode(image)}") as view:
            view.raise_for_status()
            await view.read()
        loaded = time.perf_counter() - start
        while (await self.frame("executing", prompt_id)).get("node") is not None:
            pass
        return progress, executed, loaded


def with_seed(body: dict[str, Any], seed: int) -> dict[str, Any]:
    """The page's body with a new seed for its sampler (an unchanged graph would come from the backend's cache)."""
    changed = copy.deepcopy(body)
    changed.pop("prompt_id", None)  # (a page that names its prompts: each run its own)
    for node in changed["prompt"].values():
        if node["class_type"] == "KSampler":
            node["inputs"]["seed"] = seed
    return changed


async def client_runs(direct: str, api: str, body: dict[str, Any], prompts: int) -> dict[str, Any]:
    times: dict[str, list[tuple[float, float, float]]] = {"direct": [], "comfyart": []}
    async with aiohttp.ClientSession() as session:
        clients = {"direct": PageLikeClient(session, direct), "comfyart": PageLikeClient(session, f"{api}/comfy")}
        for client in clients.values():
            await client.connect()
        for i in range(prompts + 2):  # taking turns; the first two rounds warm up
            for k, (name, client) in enumerate(clients.items()):
                # a seed never run before: comfyart may send the prompt to the emulator the direct runs use
                run = await client.run(with_seed(body, 50_000 + 2 * i + k))
                if i >= 2:
                    times[name].append(run)
    result: dict[str, Any] = {"prompts": prompts}
    for name, runs in times.items():
        result[name] = {figure: ms([run[k] for run in runs])
                        for k, figure in enumerate(("to_first_progress", "to_executed", "to_image_loaded"))}
    return result


# ------------------------------------------------------------------ the run
async def browser_sections(api: str, loads: int, count: int) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Page ready, then ``count`` Run clicks (none: no graph of the pool's can run); the figures and the body of
    the page's first prompt."""
    classes = sorted(httpx.get(f"{api}/comfy/api/object_info", timeout=60).json())
    body = None
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            browsing = Browsing(playwright, browser, api, classes)
            result: dict[str, Any] = {"page_ready": await page_ready(browsing, loads)}
            if count:
                result["queue_click"], body = await clicks(browsing, count)
            result["hosts_refused"] = sorted(browsing.refused)
        finally:
            await browser.close()
    return result, body


def rows(prefix: str, value: Any) -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        return [row for key, inner in value.items() for row in rows(f"{prefix}.{key}" if prefix else key, inner)]
    return [(prefix, value)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loads", type=int, default=5, help="page loads, cold and warm")
    parser.add_argument("--clicks", type=int, default=5, help="Run clicks in the page")
    parser.add_argument("--prompts", type=int, default=20, help="page-like client prompts, per target")
    parser.add_argument("--requests", type=int, default=50, help="repeated /object_info requests")
    parser.add_argument("--cold", type=int, default=3, help="daemons started, each asked /object_info once")
    parser.add_argument("--backends", type=int, default=8)
    parser.add_argument("--preview-method", default="none", choices=("none", "auto"),
                        help="the emulators' --preview-method (none: ComfyUI's default; auto: a preview each step)")
    args = parser.parse_args()
    rig = Bench(Path(tempfile.mkdtemp(prefix="comfyart-bench-editor-")))
    try:
        redis_url = rig.redis()
        urls = rig.fleet(args.backends, args.backends, *EMULATOR_FLAGS, "--preview-method", args.preview_method)
        results: dict[str, Any] = {"backends": args.backends, "steps": STEPS, "step_s": STEP_S, "auth": "off",
                                   "backend_preview_method": args.preview_method, "object_info": {},
                                   "page_ready": {}}
        large, results["page_ready"]["2mb_documents"], refused = large_documents(rig, redis_url, args)
        results["object_info"]["emulators"], api = object_info_figures(rig, redis_url, urls, args.cold,
                                                                       args.requests)
        results["object_info"]["2mb_documents"] = large
        browsed, body = asyncio.run(browser_sections(api, args.loads, args.clicks))
        results["page_ready"]["emulators"] = browsed["page_ready"]
        results["queue_click"] = browsed["queue_click"]
        results["hosts_refused"] = sorted({*refused, *browsed["hosts_refused"]})
        assert body is not None
        results["queue_client"] = asyncio.run(client_runs(urls[0], api, body, args.prompts))
    finally:
        rig.close()
        shutil.rmtree(rig.workdir, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "editor.json").write_text(json.dumps(results, indent=2) + "\n")
    for name, value in rows("", results):
        print(f"{name:<52} {value}")
    print(f"written to {(RESULTS / 'editor.json').relative_to(ROOT)}")


if __name__ == "__main__":
    main()
