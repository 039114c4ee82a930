"""What ComfyUI's web editor asks at start-up and in its queue panel (api.comfyui.startup), answered for the whole
pool: a daemon over two emulators (run in this test, each given the routes of a ComfyUI with custom nodes that the
emulator lacks), against a real redis-server."""
from __future__ import annotations

import asyncio
import io
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web
from PIL import Image

from comfyart.emulator.app import build_app
from comfyart.emulator.behaviour import Behaviour
from comfyart.emulator.engine import DEFAULT_CHECKPOINTS, Emulator
from tests.support.daemon import healthy_count, make_settings, running_daemon, serving, wait_for_pool
from tests.support.graphs import basic_graph

ADMIN_KEY = "ops-admin-key-0123456789abcdef"
ALICE_KEY = "alice-client-key-0123456789abcdef"
CAROL_KEY = "carol-client-key-0123456789abcdef"

# what each backend has beyond the emulator: custom nodes' scripts, translations, templates, blueprints, models
FIRST: dict[str, Any] = {
    "/extensions": ["/extensions/core/widgets.js", "/extensions/pack-a/main.js", "/extensions/pack-a/lib/util.js"],
    "/i18n": {"en": {"nodeDefs": {"A": {"display_name": "A from one"}}}},
    "/workflow_templates": {"pack-a": ["upscale"]},
    "/global_subgraphs": {"s1": {"source": "custom_node", "name": "Blur", "info": {"node_pack": "pack-a"}}},
    "/experiment/models": [{"name": "checkpoints", "folders": ["/one/checkpoints"]}],
    "/experiment/models/checkpoints": [{"name": "a.safetensors", "pathIndex": 0}],
    "/internal/folder_paths": {"checkpoints": ["/one/checkpoints"]},
}
SECOND: dict[str, Any] = {
    "/extensions": ["/extensions/core/widgets.js"],
    "/i18n": {"en": {"nodeDefs": {"A": {"display_name": "A from two"}, "B": {"display_name": "B"}}},
              "fr": {"nodeDefs": {"B": {"display_name": "Bé"}}}},
    "/workflow_templates": {"pack-a": ["upscale", "inpaint"], "pack-b": ["video"]},
    "/experiment/models": [{"name": "checkpoints", "folders": ["/two/checkpoints"]},
                           {"name": "loras", "folders": ["/two/loras"]}],
    "/experiment/models/checkpoints": [{"name": "b.safetensors", "pathIndex": 0}],
}
FILES: list[dict[str, tuple[str, bytes]]] = [
    {"/extensions/pack-a/main.js": ("application/javascript", b"export const from = 'one';"),
     "/extensions/pack-a/lib/util.js": ("application/javascript", b"export const util = 1;"),
     "/extensions/pack-a/style.css": ("text/css", b".a { color: red }"),
     "/templates/index.json": ("application/json", b'[{"moduleName": "default"}]'),
     "/global_subgraphs/s1": ("application/json", b'{"name": "Blur", "data": "{}"}'),
     "/view_metadata/checkpoints": ("application/json", b'{"modelspec.title": "A"}'),
     "/experiment/models/preview/checkpoints/0/a.safetensors": ("image/webp", b"RIFF....WEBP")},
    # the second serves a script of the same name without listing it: what is not listed is never asked of it
    {"/extensions/pack-a/main.js": ("application/javascript", b"export const from = 'two';"),
     "/extensions/pack-b/x.js": ("application/javascript", b"unlisted")},
]


def _with_answers(app: web.Application, answers: dict[str, Any], files: dict[str, tuple[str, bytes]]) -> None:
    """``app`` answering those paths itself (a middleware: the emulator answers some of them, emptily)."""
    @web.middleware
    async def answer(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path in answers:
            return web.json_response(answers[request.path])
        if request.path in files:
            if request.path.startswith("/view_metadata") and request.query.get("filename") != "a.safetensors":
                return web.Response(status=404)
            content_type, body = files[request.path]
            return web.Response(body=body, content_type=content_type)
        return await handler(request)

    app.middlewares.append(answer)


@asynccontextmanager
async def two_backends() -> AsyncIterator[list[dict[str, str]]]:
    """Two emulators in this process with the routes above; yields their ``static_backends`` section."""
    async with AsyncExitStack() as stack:
        urls = []
        for i, answers in enumerate((FIRST, SECOND)):
            base_dir = stack.enter_context(tempfile.TemporaryDirectory())
            app = build_app(Emulator(base_dir, Behaviour(), checkpoints=DEFAULT_CHECKPOINTS, vram_mb=24576, gpu="0"))
            _with_answers(app, answers, FILES[i])
            urls.append(await stack.enter_async_context(serving(app)))
        yield [{"name": f"emu{i}", "url": url} for i, url in enumerate(urls)]


async def _finished(api: httpx.AsyncClient, prompt_id: str, timeout_s: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = (await api.get(f"/api/jobs/{prompt_id}")).json()
        if found.get("status") in ("completed", "failed", "cancelled"):
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {prompt_id} not finished after {timeout_s} s")


async def test_custom_node_scripts_come_from_the_backend_that_lists_them(tmp_path: Path, redis_url):
    async with two_backends() as backends, \
            running_daemon(make_settings(tmp_path, redis_url, static_backends=backends)) as api:
        await wait_for_pool(api, lambda pool: healthy_count(pool) == 2)
        script = await api.get("/extensions/pack-a/main.js")
        assert script.status_code == 200 and script.text == "export const from = 'one';"
        assert script.headers["content-type"].startswith("application/javascript")
        assert "max-age" in script.headers["cache-control"]
        assert (await api.get("/extensions/pack-a/lib/util.js")).text == "export const util = 1;"
        # a pack's file that /extensions does not list (a style sheet) from a backend that has the pack
        assert (await api.get("/extensions/pack-a/style.css")).text == ".a { color: red }"
        unlisted = await api.get("/extensions/pack-b/x.js")  # the second has it, but lists no such pack
        assert unlisted.status_code == 404 and "/extensions/pack-b/x.js" in unlisted.json()["error"]
        assert (await api.get("/extensions/pack-c/none.js")).status_code == 404
        assert (await api.get("/extensions/core/widgets.js")).status_code == 404  # the page's own, not a backend's
        for escape in ("/extensions/pack-a/%2E%2E/%2E%2E/etc/passwd", "/extensions/pack-a/lib/%2E%2E/main.js",
                       "/templates/%2E%2E/secret", "/api/workflow_templates/pack-a/%2E%2E/x.json"):
            refused = await api.get(escape)
            assert refused.status_code == 404, (escape, refused.text)
        # the pool's extension list still has both packs' scripts
        assert set(FIRST["/extensions"]) <= set((await api.get("/api/extensions")).json())


async def test_the_editors_startup_answers_are_the_whole_pools(tmp_path: Path, redis_url):
    async with two_backends() as backends, \
            running_daemon(make_settings(tmp_path, redis_url, static_backends=backends)) as api:
        await wait_for_pool(api, lambda pool: healthy_count(pool) == 2)
        for prefix in ("", "/api"):
            assert (await api.get(prefix + "/i18n")).json() == {
                "en": {"nodeDefs": {"A": {"display_name": "A from one"}, "B": {"display_name": "B"}}},
                "fr": {"nodeDefs": {"B": {"display_name": "Bé"}}}}
        templates = (await api.get("/api/workflow_templates")).json()
        assert {k: sorted(v) for k, v in templates.items()} == {"pack-a": ["inpaint", "upscale"],
                                                                 "pack-b": ["video"]}
        index = await api.get("/templates/index.json")
        assert index.json() == [{"moduleName": "default"}] and index.headers["content-type"] == "application/json"
        assert (await api.get("/templates/missing.json")).status_code == 404
        assert (await api.get("/api/global_subgraphs")).json() == FIRST["/global_subgraphs"]
        assert (await api.get("/api/global_subgraphs/s1")).json()["name"] == "Blur"
        assert (await api.get("/api/global_subgraphs/nope")).status_code == 404
        assert (await api.get("/api/node_replacements")).json() == {}  # no backend has the route
        folders = (await api.get("/api/experiment/models")).json()
        assert folders == [{"name": "checkpoints", "folders": ["/one/checkpoints"]},
                           {"name": "loras", "folders": ["/two/loras"]}]
        assert sorted(m["name"] for m in (await api.get("/api/experiment/models/checkpoints")).json()) == [
            "a.safetensors", "b.safetensors"]
        assert (await api.get("/api/experiment/models/nothing-here")).status_code == 404
        preview = await api.get("/api/experiment/models/preview/checkpoints/0/a.safetensors")
        assert preview.content == b"RIFF....WEBP" and preview.headers["content-type"] == "image/webp"
        metadata = await api.get("/api/view_metadata/checkpoints", params={"filename": "a.safetensors"})
        assert metadata.json() == {"modelspec.title": "A"}
        for name in ("b.safetensors", "a.ckpt"):
            assert (await api.get("/api/view_metadata/checkpoints", params={"filename": name})).status_code == 404
        assert (await api.get("/internal/folder_paths")).json() == FIRST["/internal/folder_paths"]
        assert (await api.get("/internal/logs")).json() == ""
        assert (await api.get("/internal/logs/raw")).json() == {"entries": [], "size": {"cols": 80, "rows": 24}}
        subscribe = await api.patch("/internal/logs/subscribe", json={"enabled": True, "clientId": "c"})
        assert subscribe.status_code == 200
        assert (await api.get("/user.css")).status_code == 404
        await _files_and_assets(api)


async def _files_and_assets(api: httpx.AsyncClient) -> None:
    picture = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(picture, format="PNG")
    uploaded = (await api.post("/upload/image", files={"image": ("mine.png", picture.getvalue())})).json()
    assert (await api.get("/internal/files/input")).json() == [uploaded["name"]]
    assert (await api.get("/internal/files/output")).json() == []
    assert (await api.get("/internal/files/elsewhere")).status_code == 400
    prompt_id = (await api.post("/prompt", json={"prompt": basic_graph()})).json()["prompt_id"]
    assert (await _finished(api, prompt_id))["status"] == "completed"
    page = (await api.get(f"/api/jobs/{prompt_id}/assets", params={"limit": 500, "offset": 0})).json()
    assert page["job_id"] == prompt_id
    assert page["pagination"] == {"offset": 0, "limit": 500, "total": 1, "has_more": False}
    [asset] = page["assets"]
    assert asset["node_id"] == "3" and asset["output_index"] == 0 and asset["mime_type"] == "image/png"
    picture_back = await api.get(asset["preview_url"])
    assert picture_back.status_code == 200 and len(picture_back.content) == asset["size"]
    assert asset["name"].endswith(".png") and asset["created_at"].endswith("Z")
    assert (await api.get("/api/jobs/no-such-job/assets")).status_code == 404
    assert (await api.get(f"/api/jobs/{prompt_id}/assets", params={"limit": 0})).status_code == 400


async def test_with_no_backend_healthy_the_pools_answers_are_503_with_retry_after(tmp_path: Path, redis_url):
    async with running_daemon(make_settings(tmp_path, redis_url)) as api:
        for path in ("/api/i18n", "/workflow_templates", "/api/experiment/models", "/extensions/pack-a/main.js",
                     "/templates/index.json", "/internal/folder_paths", "/api/global_subgraphs/s1"):
            answer = await api.get(path)
            assert answer.status_code == 503 and int(answer.headers["retry-after"]) >= 1, (path, answer.text)
        assert (await api.get("/internal/logs")).status_code == 200  # comfyart's own


def _secured(tmp_path: Path, redis_url: str, backends: list[dict[str, str]]) -> Any:
    auth = {"keys": [{"name": "ops", "role": "admin", "key": ADMIN_KEY}, {"name": "alice", "key": ALICE_KEY},
                     {"name": "carol", "key": CAROL_KEY}]}
    return make_settings(tmp_path, redis_url, auth=auth, static_backends=backends)


async def test_an_admin_sees_every_owners_jobs_and_a_client_its_own(tmp_path: Path, redis_url, emulator):
    emu = emulator()
    async with running_daemon(_secured(tmp_path, redis_url, [{"name": "emu0", "url": emu.url}])) as api:
        admin, alice, carol = (httpx.AsyncClient(base_url=api.base_url, timeout=30,
                                                 headers={"Authorization": f"Bearer {key}"})
                               for key in (ADMIN_KEY, ALICE_KEY, CAROL_KEY))
        await wait_for_pool(admin, lambda pool: healthy_count(pool) == 1)
        for client, prompt_id in ((alice, "p-alice"), (carol, "p-carol"), (admin, "p-admin")):
            answer = await client.post("/prompt", json={"prompt": basic_graph(), "prompt_id": prompt_id})
            assert answer.status_code == 200, answer.text
            await _finished(client, prompt_id)
        everything = (await admin.get("/api/jobs")).json()
        assert sorted(j["id"] for j in everything["jobs"]) == ["p-admin", "p-alice", "p-carol"]
        assert everything["pagination"]["total"] == 3
        assert [j["id"] for j in (await alice.get("/api/jobs")).json()["jobs"]] == ["p-alice"]
        assert (await admin.get("/api/jobs/p-carol")).json()["status"] == "completed"
        assert (await admin.get("/api/jobs/p-carol/assets")).json()["pagination"]["total"] == 1
        for path in ("/api/jobs/p-carol", "/api/jobs/p-carol/assets"):
            assert (await alice.get(path)).status_code == 404
        # a prompt of carol's that hangs: alice cannot cancel it, the admin can
        emu.control(hang=True)
        await carol.post("/prompt", json={"prompt": basic_graph(color=7), "prompt_id": "p-stuck"})
        assert (await alice.post("/api/jobs/p-stuck/cancel")).status_code == 404
        assert (await alice.post("/api/jobs/cancel", json={"job_ids": ["p-stuck"]})).json() == {"cancelled": False}
        assert (await admin.post("/api/jobs/p-stuck/cancel")).json() == {"cancelled": True}
        assert (await _finished(carol, "p-stuck"))["status"] == "cancelled"
        # what carol clears from her history leaves the admin's view too
        assert (await carol.post("/history", json={"clear": True})).status_code == 200
        remaining = sorted(j["id"] for j in (await admin.get("/api/jobs")).json()["jobs"])
        assert remaining == ["p-admin", "p-alice"], remaining
        assert (await admin.get("/api/jobs/p-carol")).status_code == 404
        for client in (admin, alice, carol):
            await client.aclose()
