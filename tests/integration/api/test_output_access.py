"""Who may read a task's outputs through the routes that serve them (api.tasks), against a daemon with an emulated
backend and API keys: ``/output`` answers only the task's owner, a signed link opens only the output it names
(HEAD too), and a client that leaves while ``?wait=`` waits leaves no subscription behind."""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx

from comfyart.bus import EventHub
from tests.support.daemon import make_settings, running_daemon, static_backends, wait_for_tasks
from tests.support.graphs import basic_graph

ALICE_KEY = "alice-client-key-0123456789abcdef"
CAROL_KEY = "carol-client-key-0123456789abcdef"


def as_key(api: httpx.AsyncClient, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=api.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


async def test_the_first_output_and_a_signed_link_open_for_whom_they_should(tmp_path: Path, redis_url, emulator):
    auth = {"keys": [{"name": "alice", "key": ALICE_KEY}, {"name": "carol", "key": CAROL_KEY}]}
    settings = make_settings(tmp_path, redis_url, auth=auth, static_backends=static_backends(emulator()))
    async with running_daemon(settings) as api, as_key(api, ALICE_KEY) as alice, as_key(api, CAROL_KEY) as carol:
        theirs = (await carol.post("/api/tasks", json={"prompt": basic_graph()})).json()["id"]
        [task] = await wait_for_tasks(carol, [theirs])
        [output] = task["outputs"]
        first, named = f"/api/tasks/{theirs}/output", f"/api/tasks/{theirs}/outputs/{output['filename']}"
        for method in ("GET", "HEAD"):
            assert (await carol.request(method, first)).status_code == 200, method
            assert (await alice.request(method, first)).status_code == 404, method  # as if there were no task
            assert (await alice.request(method, first, params={"wait": 1})).status_code == 404, method
            assert (await api.request(method, first)).status_code == 401, method
            assert (await api.request(method, named)).status_code == 401, method  # neither key nor signature
        got = await alice.get(first)
        assert got.json()["detail"] == f"no task {theirs}"

        link = httpx.URL((await carol.post(f"{named}/link", params={"expires_in_s": 600})).json()["url"])
        head = await api.head(str(link))  # no key: the signature lets it in
        assert head.status_code == 200 and head.content == b""
        assert int(head.headers["content-length"]) == output["size"]
        assert head.headers["content-disposition"] == f'attachment; filename="{output["filename"]}"'
        # the link's signature names one output's path: it opens neither /output nor anything else
        for method in ("GET", "HEAD"):
            assert (await api.request(method, first, params=link.params)).status_code == 401, method
            assert (await alice.request(method, first, params=link.params)).status_code == 404, method


async def until(condition: Callable[[], bool], timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.05)


async def test_a_client_that_leaves_mid_wait_releases_its_subscription(tmp_path: Path, redis_url, emulator):
    hub = EventHub()
    settings = make_settings(tmp_path, redis_url, static_backends=static_backends(emulator("--node-seconds", "30")))
    async with running_daemon(settings, events=hub) as api:
        task_id = (await api.post("/api/tasks", json={"prompt": basic_graph()})).json()["id"]
        await wait_for_tasks(api, [task_id], final=("running",))
        before = hub.subscriptions
        _, writer = await asyncio.open_connection(api.base_url.host, api.base_url.port)
        writer.write(f"GET /api/tasks/{task_id}/output?wait=120 HTTP/1.1\r\nHost: comfyart\r\n\r\n".encode())
        await writer.drain()
        await until(lambda: hub.subscriptions == before + 1, 10)  # waiting for the task's end

        writer.close()  # gone mid-wait, long before the task ends or the wait runs out
        await writer.wait_closed()
        await until(lambda: hub.subscriptions == before, 10)  # noticed within a recheck (RECHECK_S)
        assert (await api.get(f"/api/tasks/{task_id}")).json()["status"] == "running"

        # a client that stays is still answered when the wait runs out
        waited = await api.get(f"/api/tasks/{task_id}/output", params={"wait": 0.5})
        assert waited.status_code == 409 and hub.subscriptions == before
