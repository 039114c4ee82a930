"""What the dashboard reads besides the task and pool routes: the page and its files (open, with a strict
Content-Security-Policy), the charts' samples in Redis, a task queued again, and who the caller is."""
from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import aiohttp
from pydantic import SecretStr

from tests.support.daemon import make_settings, running_daemon, wait_for_tasks
from tests.support.graphs import basic_graph, text_to_image_graph
from tests.support.paths import ROOT
from tests.support.ports import free_port_range

ADMIN_KEY = "stats-admin-key-0123456789abcdef"
CLIENT_KEY = "stats-client-key-0123456789abcdef"
OTHER_KEY = "stats-other-key-0123456789abcdef"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
CLIENT = {"Authorization": f"Bearer {CLIENT_KEY}"}
OTHER = {"Authorization": f"Bearer {OTHER_KEY}"}


def settings_for(tmp_path: Path, redis_url: str, emulator, **sections):
    emu = emulator("--fail-node-types", "ImageInvert", "--step-seconds", "0.05")
    return make_settings(tmp_path, redis_url, static_backends=[{"name": "emu", "url": emu.url}],
                         workflows={"directory": str(ROOT / "config" / "workflows")},
                         dashboard={"stats_interval_s": 0.2},
                         auth={"keys": [{"name": "ops", "role": "admin", "key": ADMIN_KEY},
                                        {"name": "user", "key": CLIENT_KEY}, {"name": "other", "key": OTHER_KEY}]},
                         **sections)


async def test_the_page_and_its_files_need_no_key_and_forbid_inline_code(tmp_path: Path, redis_url, emulator):
    async with running_daemon(settings_for(tmp_path, redis_url, emulator)) as api:
        page = await api.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "unsafe-inline" not in policy and "frame-ancestors 'none'" in policy
        for asset in ("/ui/app.js", "/ui/style.css", "/ui/icon.svg"):
            assert (await api.get(asset)).status_code == 200, asset
        # the page names only files that exist
        for name in ("app.js", "style.css", "icon.svg"):
            assert f"/ui/{name}" in page.text
        assert (await api.get("/ui/nothing.js")).status_code == 404
        for escape in ("/ui/../api.py", "/ui/%2e%2e/api.py", "/ui/..%2fapi.py"):
            answer = await api.get(escape)
            assert answer.status_code in (401, 404) and "import" not in answer.text, escape
        # the data behind the page still needs a key
        assert (await api.get("/api/tasks")).status_code == 401
        assert (await api.get("/api/stats")).status_code == 401
        assert (await api.get("/api/me")).status_code == 401
        assert (await api.get("/api/me", headers=CLIENT)).json() == {"id": "config:user", "name": "user",
                                                                    "role": "client", "auth": True, "max_queued": 1000}
        assert (await api.get("/api/me", headers=ADMIN)).json()["role"] == "admin"


async def test_with_a_basic_auth_user_the_page_comes_with_the_challenge(tmp_path: Path, redis_url, emulator):
    settings = settings_for(tmp_path, redis_url, emulator)
    settings.auth.admin_user = "ops"
    settings.auth.admin_password = SecretStr("correct horse battery staple")
    async with running_daemon(settings) as api:
        bare = await api.get("/")
        # the browser asks for the user; dismissed, it shows the page, which asks for an API key instead
        assert bare.status_code == 401 and bare.headers["www-authenticate"] == 'Basic realm="comfyart"'
        assert "/ui/app.js" in bare.text and "default-src 'self'" in bare.headers["content-security-policy"]
        assert (await api.get("/", auth=("ops", "correct horse battery staple"))).status_code == 200
        assert (await api.get("/", headers=CLIENT)).status_code == 200
        assert (await api.get("/", auth=("ops", "wrong"))).status_code == 401
        assert (await api.get("/ui/app.js")).status_code == 200  # the files never ask


async def test_the_dashboard_can_be_turned_off(tmp_path: Path, redis_url):
    async with running_daemon(make_settings(tmp_path, redis_url, dashboard={"enabled": False})) as api:
        assert (await api.get("/")).status_code == 404
        assert (await api.get("/ui/app.js")).status_code == 404
        me = (await api.get("/api/me")).json()
        assert me == {"id": None, "name": "anonymous", "role": "admin", "auth": False, "max_queued": None}


async def test_samples_count_every_ending_and_survive_a_restart(tmp_path: Path, redis_url, emulator):
    settings = settings_for(tmp_path, redis_url, emulator)
    async with running_daemon(settings) as api:
        api.headers.update(CLIENT)
        good = [(await api.post("/api/tasks", json={"prompt": text_to_image_graph(seed=i, steps=2)})).json()["id"]
                for i in range(5)]
        bad = [(await api.post("/api/tasks", json={"prompt": basic_graph()})).json()["id"] for _ in range(3)]
        slow = (await api.post("/api/tasks", json={"prompt": text_to_image_graph(steps=500)})).json()["id"]
        await wait_for_tasks(api, good + bad)
        await api.delete(f"/api/tasks/{slow}")
        await wait_for_tasks(api, [slow])
        await asyncio.sleep(0.5)  # the next samples carry the last endings
        stats = (await api.get("/api/stats?window_s=600")).json()
        assert stats["interval_s"] == 0.2
        samples = stats["samples"]
        assert [s["t"] for s in samples] == sorted(s["t"] for s in samples)
        assert sum(s["completed"] for s in samples) == 5
        assert sum(s["failed"] for s in samples) == 3
        assert sum(s["canceled"] for s in samples) == 1
        assert max(s["queued"] + s["submitted"] + s["running"] for s in samples) >= 1  # the depth was seen
        assert samples[-1]["queued"] + samples[-1]["running"] == 0
        written = len(samples)
    async with running_daemon(settings) as api:
        api.headers.update(ADMIN)
        samples = (await api.get("/api/stats?window_s=600")).json()["samples"]
        assert len(samples) > written and sum(s["completed"] for s in samples) == 5  # the old ones are still there
        assert (await api.get("/api/stats?window_s=1")).status_code == 422  # a minute at least


async def test_samples_are_capped(tmp_path: Path, redis_url, emulator, redis_client):
    settings = settings_for(tmp_path, redis_url, emulator, redis={"url": redis_url, "prefix": "capped"})
    settings.dashboard.stats_keep_s = 60.0  # 300 samples of 0.2 s
    async with running_daemon(settings):
        key = "capped:stats:samples"
        await redis_client.delete(key)
        await redis_client.lpush(key, *[json.dumps({"t": i}) for i in range(400)])
        for _ in range(50):
            if await redis_client.llen(key) <= 300:
                break
            await asyncio.sleep(0.1)
        assert await redis_client.llen(key) == 300
        assert json.loads(await redis_client.lindex(key, 0))["completed"] == 0  # the newest is a real sample


async def test_retry_queues_an_ended_task_again(tmp_path: Path, redis_url, emulator, redis_client):
    settings = settings_for(tmp_path, redis_url, emulator)
    async with running_daemon(settings) as api:
        api.headers.update(CLIENT)
        run = (await api.post("/api/workflows/text-to-image/run",
                              json={"params": {"prompt": "a barn", "steps": 2, "width": 64}, "priority": "high"}))
        first = run.json()
        running = (await api.post("/api/tasks", json={"prompt": text_to_image_graph(steps=400)})).json()["id"]
        refused = await api.post(f"/api/tasks/{running}/retry")
        assert refused.status_code == 409 and "still" in refused.json()["detail"]
        await api.delete(f"/api/tasks/{running}")
        [done] = await wait_for_tasks(api, [first["id"]])
        assert done["status"] == "completed"

        # a workflow task runs again with the same version and parameters, the seed it used included
        again = await api.post(f"/api/tasks/{first['id']}/retry")
        assert again.status_code == 201 and again.headers["location"] == f"/api/tasks/{again.json()['id']}"
        [record] = await wait_for_tasks(api, [again.json()["id"]])
        assert record["retry_of"] == first["id"] and record["status"] == "completed"
        assert record["params"] == done["params"] and record["workflow_version"] == done["workflow_version"]
        assert record["priority"] == 1 and record["owner"] == "config:user"
        assert record["outputs"][0]["sha256"] == done["outputs"][0]["sha256"]  # same seed, same picture

        # a canceled raw graph runs again as the same graph
        canceled = await api.post(f"/api/tasks/{running}/retry")
        assert canceled.status_code == 201
        assert (await api.get(f"/api/tasks/{canceled.json()['id']}")).json()["prompt"] == text_to_image_graph(steps=400)
        await api.delete(f"/api/tasks/{canceled.json()['id']}")

        # a deleted workflow's versions stay a while for the tasks that name them; once they expired, the task's
        # resolved graph runs
        assert (await api.delete("/api/workflows/text-to-image", headers=ADMIN)).status_code == 204
        kept = await api.post(f"/api/tasks/{first['id']}/retry")
        assert (await api.get(f"/api/tasks/{kept.json()['id']}")).json()["workflow"] == "text-to-image"
        await redis_client.delete(f"{settings.redis.prefix}:workflow-versions:text-to-image")  # as if expired
        orphan = await api.post(f"/api/tasks/{first['id']}/retry")
        assert orphan.status_code == 201
        [record] = await wait_for_tasks(api, [orphan.json()["id"]])
        assert record["workflow"] is None and record["status"] == "completed" and record["retry_of"] == first["id"]

        # another key's task is as unknown as a missing one
        assert (await api.post(f"/api/tasks/{first['id']}/retry", headers=OTHER)).status_code == 404
        assert (await api.post("/api/tasks/01NOSUCHTASK/retry")).status_code == 404


async def test_a_backend_lists_the_tasks_it_runs(tmp_path: Path, redis_url, emulator):
    async with running_daemon(settings_for(tmp_path, redis_url, emulator)) as api:
        api.headers.update(ADMIN)
        slow = (await api.post("/api/tasks", json={"prompt": text_to_image_graph(steps=400)})).json()["id"]
        for _ in range(100):
            backends = (await api.get("/api/pool")).json()["backends"]
            if backends and backends[0]["tasks"]:
                break
            await asyncio.sleep(0.1)
        assert backends[0]["tasks"] == [slow] and backends[0]["inflight"] == 1
        await api.delete(f"/api/tasks/{slow}")


async def test_the_list_and_the_record_carry_the_prompt_text(tmp_path: Path, redis_url, emulator):
    async with running_daemon(settings_for(tmp_path, redis_url, emulator)) as api:
        api.headers.update(CLIENT)
        run = (await api.post("/api/workflows/text-to-image/run",
                              json={"params": {"prompt": "a barn\nat dusk", "steps": 2, "width": 64}})).json()["id"]
        graph = (await api.post("/api/tasks", json={"prompt": text_to_image_graph(steps=2)})).json()["id"]
        bare = (await api.post("/api/tasks", json={"prompt": basic_graph()})).json()["id"]
        expected = {run: "a barn at dusk", graph: "a lighthouse", bare: None}
        listed = {t["id"]: t for t in (await api.get("/api/tasks")).json()["tasks"]}
        assert {i: listed[i]["prompt_text"] for i in expected} == expected and "prompt" not in listed[run]
        await wait_for_tasks(api, list(expected))
        for task_id, text in expected.items():  # the workflow run, dispatched, has its graph now: the same words
            assert (await api.get(f"/api/tasks/{task_id}")).json()["prompt_text"] == text


async def test_autoscaler_decisions_are_events_for_admins_only(tmp_path: Path, redis_url):
    command = ["{python}", "-m", "comfyart.emulator", "--host", "{address}", "--port", "{port}"]
    settings = make_settings(tmp_path, redis_url,
                             processes={"command": command, "address": "127.0.0.1", "ports": list(free_port_range(2)),
                                        "gpus": [0], "startup_timeout": 20},
                             pool={"min_containers": 1, "max_containers": 1},
                             auth={"keys": [{"name": "ops", "role": "admin", "key": ADMIN_KEY},
                                            {"name": "user", "key": CLIENT_KEY}]})
    async with running_daemon(settings) as api, aiohttp.ClientSession() as session:
        ws = str(api.base_url).replace("http", "ws") + "/api/events?token="
        async with session.ws_connect(ws + ADMIN_KEY) as admin, session.ws_connect(ws + CLIENT_KEY) as client:
            await api.post("/api/tasks", json={"prompt": basic_graph()}, headers=CLIENT)  # the load moves
            decisions = []
            async with asyncio.timeout(15):
                while not decisions:
                    event = json.loads((await admin.receive()).data)
                    if event["type"] == "autoscaler":
                        decisions.append(event)
            pool = (await api.get("/api/pool", headers=ADMIN)).json()
            assert decisions[0]["desired"] == 1 and "bounded to 1" in decisions[0]["reason"]
            assert set(decisions[0]) == {"type", *pool["autoscaler"]}
            heard = []
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.5):
                    while True:
                        heard.append(json.loads((await client.receive()).data)["type"])
            assert heard and "autoscaler" not in heard and "pool" not in heard, heard
