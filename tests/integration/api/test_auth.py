"""Who may do what, against a real redis-server and emulator processes: API keys and roles, each client's own view of
tasks, outputs, events and the ComfyUI-compatible API, signed output URLs, quotas, webhook targets, secrets."""
from __future__ import annotations

import asyncio
import base64
import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest

from comfyart.errors import ConfigError
from tests.support.daemon import http_receiver, make_settings, running_daemon, static_backends, wait_for_tasks
from tests.support.graphs import basic_graph

ADMIN_KEY = "ops-admin-key-0123456789abcdef"
ALICE_KEY = "alice-client-key-0123456789abcdef"
CAROL_KEY = "carol-client-key-0123456789abcdef"
ADMIN_USER, ADMIN_PASSWORD = "root", "correct horse battery"


def secured(tmp_path: Path, redis_url: str, *, quotas: dict[str, Any] | None = None, **sections: Any):
    auth = {"keys": [{"name": "ops", "role": "admin", "key": ADMIN_KEY},
                     {"name": "alice", "key": ALICE_KEY},
                     # carol's quota is the number of unfinished tasks alone (0: no rate), so that how fast this
                     # machine runs the requests cannot decide which quota answers
                     {"name": "carol", "key": CAROL_KEY, "max_queued": 2, "submissions_per_minute": 0}],
            "admin_user": ADMIN_USER, "admin_password": ADMIN_PASSWORD,
            "quotas": quotas or {"max_queued": 100, "submissions_per_minute": 6000, "burst": 100}}
    return make_settings(tmp_path, redis_url, auth=auth, **sections)


def as_key(api: httpx.AsyncClient, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=api.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


# every route that changes or reveals the pool, the scheduler, workflows' definitions or keys; anything else a
# client may call (and then sees its own things only)
ADMIN_ROUTES = {
    ("GET", "/api/pool"), ("POST", "/api/pool/health-check"), ("POST", "/api/pool/scale"),
    ("POST", "/api/pool/backends"), ("DELETE", "/api/pool/backends/{name}"),
    ("POST", "/api/pool/backends/{backend_id}/{action}"), ("GET", "/api/pool/backends/{backend_id}/logs"),
    ("POST", "/api/pool/backends/{backend_id}/refresh"), ("POST", "/api/pool/refresh"),
    ("GET", "/api/pool/backends"), ("GET", "/api/pool/backends/{backend_id}"),  # a backend by address or id
    ("POST", "/api/pool/drain"), ("GET", "/api/pool/drained"),  # a preStop hook's drain
    ("GET", "/api/scheduler"), ("PUT", "/api/scheduler"),
    ("POST", "/api/workflows/infer"), ("PUT", "/api/workflows/{name}"), ("DELETE", "/api/workflows/{name}"),
    ("GET", "/api/keys"), ("POST", "/api/keys"), ("DELETE", "/api/keys/{key_id}"),
    ("POST", "/free"), ("POST", "/api/free"), ("GET", "/metrics"), ("GET", "/api/cluster"),
}


async def test_the_admin_routes_are_exactly_those_the_spec_names(tmp_path: Path, redis_url):
    async with running_daemon(secured(tmp_path, redis_url)) as api:
        alice, admin = as_key(api, ALICE_KEY), as_key(api, ADMIN_KEY)
        assert (await api.get("/openapi.json")).status_code == 401  # even the schema needs a key
        schema = (await alice.get("/openapi.json")).json()
        for method, path in sorted(ADMIN_ROUTES):
            concrete = re.sub(r"\{[^}]+\}", "x", path)
            refused = await alice.request(method, concrete, json={})
            assert refused.status_code == 403, (method, path, refused.text)
            assert refused.json()["detail"] == "this needs an admin key"
            assert (await admin.request(method, concrete, json={})).status_code not in (401, 403), (method, path)
        # every other route of the schema lets a client in (to its own things: 404 for what is not)
        routes = {(m.upper(), p) for p, operations in schema["paths"].items() for m in operations}
        assert ADMIN_ROUTES - {("POST", "/api/free")} <= routes
        for method, path in sorted(routes - ADMIN_ROUTES):
            answer = await alice.request(method, re.sub(r"\{[^}]+\}", "x", path), json={})
            assert answer.status_code not in (401, 403, 500), (method, path, answer.text)


async def test_credentials_are_required_checked_and_revocable(tmp_path: Path, redis_url):
    async with running_daemon(secured(tmp_path, redis_url)) as api:
        assert (await api.get("/healthz")).status_code == 200  # for load balancers
        for headers in ({}, {"Authorization": "Bearer wrong-key-0123456789abcdef"}, {"Authorization": "Token x"},
                        {"Authorization": "Basic !!!"}, {"X-API-Key": "nope"},
                        {"Authorization": "Basic " + base64.b64encode(b"root:wrong password").decode()}):
            answer = await api.get("/api/tasks", headers=headers)
            assert answer.status_code == 401 and answer.headers["www-authenticate"].startswith("Bearer")
            assert 'Basic realm="comfyart"' in answer.headers["www-authenticate"]  # a browser asks for the admin
            assert ADMIN_KEY not in answer.text
        basic = base64.b64encode(f"{ADMIN_USER}:{ADMIN_PASSWORD}".encode()).decode()
        assert (await api.get("/api/pool", headers={"Authorization": f"Basic {basic}"})).status_code == 200
        assert (await api.get("/api/tasks", headers={"X-API-Key": ALICE_KEY})).status_code == 200
        # a query token only where headers cannot be sent (sockets, event streams)
        assert (await api.get("/api/tasks", params={"token": ALICE_KEY})).status_code == 401

        admin = as_key(api, ADMIN_KEY)
        made = await admin.post("/api/keys", json={"name": "bob", "role": "client"})
        assert made.status_code == 201
        bob_key, bob_id = made.json()["key"], made.json()["id"]
        assert bob_key.startswith(f"ca_{bob_id}_")
        listed = (await admin.get("/api/keys")).json()["keys"]
        assert {k["name"] for k in listed} == {"ops", "alice", "carol", "bob"}
        assert bob_key not in json.dumps(listed) and "sha256" not in json.dumps(listed)
        assert (await as_key(api, bob_key).get("/api/tasks")).status_code == 200
        # only a hash of it is in Redis
        import redis.asyncio as aioredis
        async with aioredis.from_url(redis_url, decode_responses=True) as redis:
            stored = json.dumps(await redis.hgetall("comfyart:keys"))
        assert bob_key not in stored and bob_key.split("_", 2)[2] not in stored
        assert (await admin.delete(f"/api/keys/{bob_id}")).json()["revoked_ms"] is not None
        assert (await as_key(api, bob_key).get("/api/tasks")).status_code == 401
        assert (await admin.delete("/api/keys/nosuchkey")).status_code == 404
        for body in ({"name": "has space"}, {"name": "x", "role": "root"}, {"name": "x", "max_queued": -1}):
            assert (await admin.post("/api/keys", json=body)).status_code == 422
        # the Docker side is configuration only: no request, even an admin's, names an image, command or mount
        for path, body in (("/api/pool/backends", {"name": "x", "url": "http://127.0.0.1:9", "image": "evil"}),
                           ("/api/pool/backends", {"name": "x", "url": "http://127.0.0.1:9", "command": ["sh"]}),
                           ("/api/pool/scale", {"target": 1, "volumes": ["/:/host"]}),
                           ("/api/scheduler", {"devices": ["/dev/nvidia0"]})):
            answer = await admin.request("PUT" if path == "/api/scheduler" else "POST", path, json=body)
            assert answer.status_code == 422 and "unknown field" in answer.json()["detail"], (path, answer.text)


async def test_a_client_sees_only_its_own_tasks_outputs_and_events(tmp_path: Path, redis_url, emulator):
    emu = emulator()
    async with running_daemon(secured(tmp_path, redis_url, static_backends=static_backends(emu))) as api:
        alice, carol, admin = as_key(api, ALICE_KEY), as_key(api, CAROL_KEY), as_key(api, ADMIN_KEY)
        mine = (await alice.post("/api/tasks", json={"prompt": basic_graph(color=1)})).json()["id"]
        theirs = (await carol.post("/api/tasks", json={"prompt": basic_graph(color=2)})).json()["id"]
        done = {r["id"]: r for r in await wait_for_tasks(admin, [mine, theirs])}
        assert done[mine]["owner"] == "config:alice" and done[theirs]["owner"] == "config:carol"
        filename, sub = done[theirs]["outputs"][0]["filename"], done[theirs]["outputs"][0]["subfolder"]
        view = f"/view?filename={filename}&subfolder={theirs}/{sub}"

        listing = (await alice.get("/api/tasks")).json()
        assert [t["id"] for t in listing["tasks"]] == [mine] and listing["total"] == 1
        assert (await alice.get("/api/tasks", params={"status": "completed"})).json()["total"] == 1
        assert {t["id"] for t in (await admin.get("/api/tasks")).json()["tasks"]} == {mine, theirs}
        for method, path in (("GET", f"/api/tasks/{theirs}"), ("DELETE", f"/api/tasks/{theirs}"),
                             ("GET", f"/api/tasks/{theirs}/outputs/{filename}"),
                             ("POST", f"/api/tasks/{theirs}/outputs/{filename}/link"),
                             ("GET", f"/api/tasks/{theirs}/events")):
            answer = await alice.request(method, path)
            assert answer.status_code == 404 and answer.json()["detail"] == f"no task {theirs}", (method, path)
        assert (await carol.get(f"/api/tasks/{theirs}/outputs/{filename}")).status_code == 200
        assert (await admin.get(f"/api/tasks/{theirs}/outputs/{filename}")).status_code == 200
        # nor through the ComfyUI-compatible API
        assert (await alice.get(view)).status_code == 404
        assert (await carol.get(view)).status_code == 200

        # the live events: a client following everything hears only of its own tasks
        ws_base = str(api.base_url).replace("http", "ws")
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{ws_base}/api/events", headers={"Authorization": f"Bearer {ALICE_KEY}"}
                                          ) as events:
                await carol.post("/api/tasks", json={"prompt": basic_graph(color=3)})
                another = (await alice.post("/api/tasks", json={"prompt": basic_graph(color=4)})).json()["id"]
                heard: set[str] = set()
                async with asyncio.timeout(30):
                    while True:
                        event = json.loads((await events.receive()).data)
                        assert event["type"] != "pool"
                        if event["type"] in ("task", "progress"):
                            heard.add(event["id"])
                            if event["type"] == "task" and event["id"] == another and event["status"] == "completed":
                                break
                assert heard == {another}
            # asking for another's task by id gets nothing of it
            async with session.ws_connect(f"{ws_base}/api/events?tasks={theirs},{mine}&token={ALICE_KEY}") as events:
                first = json.loads((await events.receive()).data)
                assert first["id"] == mine
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.5):
                        await events.receive()
            with pytest.raises(aiohttp.WSServerHandshakeError):
                await session.ws_connect(f"{ws_base}/api/events")


async def test_signed_links_open_an_output_without_a_key_and_nothing_else(tmp_path: Path, redis_url, emulator):
    emu = emulator()
    async with running_daemon(secured(tmp_path, redis_url, static_backends=static_backends(emu))) as api:
        alice = as_key(api, ALICE_KEY)
        task_id = (await alice.post("/api/tasks", json={"prompt": basic_graph()})).json()["id"]
        (task,) = await wait_for_tasks(alice, [task_id])
        filename = task["outputs"][0]["filename"]
        assert (await api.get(f"/api/tasks/{task_id}/outputs/{filename}")).status_code == 401
        link = (await alice.post(f"/api/tasks/{task_id}/outputs/{filename}/link",
                                 params={"expires_in_s": 600})).json()
        opened = await api.get(link["url"])  # no key
        assert opened.status_code == 200 and opened.content[:8] == b"\x89PNG\r\n\x1a\n"
        assert opened.content == (await alice.get(f"/api/tasks/{task_id}/outputs/{filename}")).content
        url = httpx.URL(link["url"])
        signature = url.params["signature"]
        tampered = [url.copy_merge_params({"signature": ("0" if signature[0] != "0" else "1") + signature[1:]}),
                    url.copy_merge_params({"expires": str(int(url.params["expires"]) + 1)}),
                    url.copy_with(path=url.path.replace(filename, "other.png"))]
        for bad in tampered:
            assert (await api.get(str(bad))).status_code == 401
        # a signature does not open any other route
        query = f"expires={url.params['expires']}&signature={signature}"
        assert (await api.get(f"/api/tasks/{task_id}?{query}")).status_code == 401
        assert (await api.get(f"/api/pool?{query}")).status_code == 401


async def test_quotas_answer_429_with_retry_after(tmp_path: Path, redis_url):
    # no backend: everything stays queued
    quotas = {"max_queued": 100, "submissions_per_minute": 60, "burst": 3}
    async with running_daemon(secured(tmp_path, redis_url, quotas=quotas)) as api:
        carol, alice, admin = as_key(api, CAROL_KEY), as_key(api, ALICE_KEY), as_key(api, ADMIN_KEY)
        # carol's key may have 2 tasks unfinished
        first = [(await carol.post("/api/tasks", json={"prompt": basic_graph(color=c)})) for c in range(2)]
        assert [r.status_code for r in first] == [201, 201]
        refused = await carol.post("/api/tasks", json={"prompt": basic_graph(color=9)})
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert "2 tasks pending or running" in refused.json()["detail"]
        await carol.delete(f"/api/tasks/{first[0].json()['id']}")  # one ends: room for one more
        assert (await carol.post("/api/tasks", json={"prompt": basic_graph(color=8)})).status_code == 201
        # alice: 3 at once, then one a second
        answers = [await alice.post("/api/tasks", json={"prompt": basic_graph(color=c)}) for c in range(4)]
        assert [a.status_code for a in answers] == [201, 201, 201, 429]
        assert answers[3].headers["retry-after"] == "1" and "60 submissions a minute" in answers[3].json()["detail"]
        comfy = await alice.post("/prompt", json={"prompt": basic_graph()})
        assert comfy.status_code == 429 and comfy.json()["error"]["type"] == "quota_exceeded"
        await asyncio.sleep(1.1)
        assert (await alice.post("/api/tasks", json={"prompt": basic_graph(color=7)})).status_code == 201
        # admins have no quota
        assert all([(await admin.post("/api/tasks", json={"prompt": basic_graph(color=c)})).status_code == 201
                    for c in range(6)])


async def test_each_key_has_its_own_comfyui(tmp_path: Path, redis_url, emulator):
    """Two clients using the same client id and prompt id neither collide nor hear each other."""
    emu = emulator()
    async with running_daemon(secured(tmp_path, redis_url, static_backends=static_backends(emu))) as api:
        ws_base = str(api.base_url).replace("http", "ws")
        frames: dict[str, list[Any]] = {}
        async with aiohttp.ClientSession() as session:
            sockets = {}
            for name, key in (("alice", ALICE_KEY), ("carol", CAROL_KEY)):
                sockets[name] = await session.ws_connect(f"{ws_base}/ws?clientId=same&token={key}")
                assert json.loads((await sockets[name].receive()).data)["type"] == "status"
            for key, color in ((ALICE_KEY, 1), (CAROL_KEY, 2)):
                answer = await as_key(api, key).post("/prompt", json={"prompt": basic_graph(color=color),
                                                                      "client_id": "same", "prompt_id": "p-1"})
                assert answer.status_code == 200, answer.text
            for name, ws in sockets.items():
                frames[name] = []
                async with asyncio.timeout(30):
                    while True:
                        message = await ws.receive()
                        if message.type != aiohttp.WSMsgType.TEXT:
                            continue
                        frame = json.loads(message.data)
                        frames[name].append(frame)
                        if frame["type"] == "executing" and frame["data"].get("node") is None:
                            break
                await ws.close()
            with pytest.raises(aiohttp.WSServerHandshakeError):
                await session.ws_connect(f"{ws_base}/ws?clientId=same")
        for name in ("alice", "carol"):
            starts = [f for f in frames[name] if f["type"] == "execution_start"]
            assert len(starts) == 1 and starts[0]["data"]["prompt_id"] == "p-1"
        histories = {}
        for name, key in (("alice", ALICE_KEY), ("carol", CAROL_KEY)):
            history = (await as_key(api, key).get("/history")).json()
            assert list(history) == ["p-1"]
            histories[name] = history["p-1"]["outputs"]
        assert histories["alice"] != histories["carol"]  # two prompts, two pictures
        assert (await as_key(api, ADMIN_KEY).get("/history/p-1")).json() == {}  # the admin's own ComfyUI
        assert (await as_key(api, ALICE_KEY).post("/free", json={})).status_code == 403
        assert (await as_key(api, ALICE_KEY).get("/api/jobs")).json()["pagination"]["total"] == 1


async def test_auth_off_refuses_an_address_other_than_loopback(tmp_path: Path, redis_url):
    from comfyart import daemon

    settings = make_settings(tmp_path, redis_url)
    settings.server.host = "192.0.2.10"  # documentation range: never bound, the check comes first
    with pytest.raises(ConfigError, match="auth is off and server.host 192.0.2.10 is not a loopback address"):
        await daemon.run(settings)


async def test_secrets_stay_out_of_the_pool_view_and_the_logs(tmp_path: Path, redis_url, emulator):
    from loguru import logger

    emu = emulator()
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message)), level="DEBUG")
    host_port = emu.url.split("://", 1)[1]
    try:
        settings = secured(tmp_path, redis_url, static_backends=[{"name": "emu", "url": f"http://u:hunter2-pw@{host_port}"}],
                           webhooks={"secret": "webhook-secret-xyz"})
        async with running_daemon(settings) as api:
            admin = as_key(api, ADMIN_KEY)
            pool = (await admin.get("/api/pool")).text
            assert "hunter2-pw" not in pool and "u:***@" in pool
            made = (await admin.post("/api/keys", json={"name": "dave"})).json()["key"]
            await as_key(api, made).get("/api/tasks")
            await api.get("/api/tasks", headers={"Authorization": f"Bearer {ALICE_KEY}x"})
    finally:
        logger.remove(sink)
    logged = "\n".join(lines)
    assert "auth on" in logged
    for secret in (ADMIN_KEY, ALICE_KEY, made, ADMIN_PASSWORD, "hunter2-pw", "webhook-secret-xyz"):
        assert secret not in logged


@pytest.mark.parametrize("allow_private", [False, True])
async def test_client_webhooks_reach_public_addresses_only(tmp_path: Path, redis_url, emulator, allow_private):
    from aiohttp import web

    from comfyart.webhooks import PRIVATE_TARGET

    received: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(json.loads(await request.read())["id"])
        return web.Response(status=204)

    emu = emulator()
    settings = secured(tmp_path, redis_url, static_backends=static_backends(emu),
                       webhooks={"backoff_s": 0.2, "allow_private_targets": allow_private})
    async with http_receiver(hook) as hook_url, running_daemon(settings) as api:
        alice, admin = as_key(api, ALICE_KEY), as_key(api, ADMIN_KEY)
        literal = await alice.post("/api/tasks", json={"prompt": basic_graph(), "webhook": hook_url})
        if not allow_private:
            assert literal.status_code == 422 and PRIVATE_TARGET in literal.json()["detail"]
        else:
            assert literal.status_code == 201
        by_name_url = hook_url.replace("127.0.0.1", "localhost")
        by_name = (await alice.post("/api/tasks", json={"prompt": basic_graph(color=5),
                                                        "webhook": by_name_url})).json()["id"]
        by_admin = (await admin.post("/api/tasks", json={"prompt": basic_graph(color=6),
                                                         "webhook": hook_url})).json()["id"]
        await wait_for_tasks(admin, [by_name, by_admin])
        deliveries: dict[str, list[dict[str, Any]]] = {}
        async with asyncio.timeout(20):
            while len(deliveries) < 2:
                for task_id in (by_name, by_admin):
                    record = (await admin.get(f"/api/tasks/{task_id}")).json()
                    if record["webhook_deliveries"] and "next_attempt_ms" not in record["webhook_deliveries"][-1]:
                        deliveries[task_id] = record["webhook_deliveries"]
                await asyncio.sleep(0.1)
        assert deliveries[by_admin][-1]["delivered"] and by_admin in received  # admins may
        if allow_private:
            assert deliveries[by_name][-1]["delivered"] and by_name in received
        else:  # "localhost" resolves to loopback: refused at once, never retried, nothing sent
            assert deliveries[by_name] == [{**deliveries[by_name][0], "delivered": False, "status": None,
                                            "error": PRIVATE_TARGET}]
            assert by_name not in received


async def test_with_redis_away_a_run_time_key_gets_503_not_a_crash(tmp_path: Path):
    import subprocess

    from tests.support.ports import free_port, wait_for_port
    from tests.support.redis import redis_server_binary

    port = free_port()
    redis = subprocess.Popen([redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        async with running_daemon(secured(tmp_path, f"redis://127.0.0.1:{port}/0")) as api:
            made = (await as_key(api, ADMIN_KEY).post("/api/keys", json={"name": "eve"})).json()["key"]
            assert (await as_key(api, made).get("/api/tasks")).status_code == 200
            redis.terminate()
            redis.wait(10)
            answer = await as_key(api, made).get("/api/tasks")
            assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
            assert answer.json()["detail"].startswith("cannot check credentials now")
            assert made not in answer.text
    finally:
        if redis.poll() is None:
            redis.terminate()
            redis.wait(10)
