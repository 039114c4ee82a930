"""The jobs API's two lists that the web editor's job panel asks at every change of the queue (running and waiting;
finished, paged) are read from the open prompts and a page of the history: they answer exactly what the full listing
filtered and paged would, in either order, for a client and for an admin over every key."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from tests.support.daemon import make_settings, running_daemon, static_backends, wait_for_tasks
from tests.support.graphs import basic_graph, text_to_image_graph

ADMIN_KEY = "jobs-admin-key-0123456789abcdefgh"
KEYS = {"alice": "jobs-alice-key-0123456789abcdefgh", "bob": "jobs-bob-key-0123456789abcdefghij"}
ACTIVE = ("pending", "in_progress")
FINISHED = ("completed", "failed", "cancelled")


async def test_the_panels_lists_are_the_full_listing_filtered_and_paged(tmp_path: Path, redis_url, emulator):
    settings = make_settings(tmp_path, redis_url, static_backends=static_backends(
        emulator("--step-seconds", "0.02", "--fail-node-types", "ImageInvert")),
        auth={"keys": [{"name": "ops", "role": "admin", "key": ADMIN_KEY},
                       *({"name": name, "key": key} for name, key in KEYS.items())]})
    async with running_daemon(settings) as api:
        alice, bob = ({"Authorization": f"Bearer {KEYS[name]}"} for name in ("alice", "bob"))
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        api.headers.update(admin)  # wait_for_tasks reads every task
        quick = [await queue(api, alice, text_to_image_graph(seed=i, steps=1)) for i in range(3)]
        quick.append(await queue(api, bob, text_to_image_graph(seed=9, steps=1)))
        quick.append(await queue(api, alice, basic_graph()))  # fails at ImageInvert
        await wait_for_tasks(api, await task_ids(api, admin), timeout_s=30)
        canceled = await queue(api, alice, text_to_image_graph(seed=20, steps=5000))
        assert (await api.post(f"/api/jobs/{canceled}/cancel", headers=alice)).json() == {"cancelled": True}
        await wait_for_tasks(api, await task_ids(api, admin), timeout_s=30)
        long = [await queue(api, alice, text_to_image_graph(seed=30 + i, steps=5000)) for i in range(2)]
        await until_running(api, admin, 1)  # one runs; the other waits (one backend, nothing prefetched)
        assert len(quick) + 1 + len(long) == 8

        for headers in (alice, admin):
            for order in ("desc", "asc"):
                full = await listing(api, headers, sort_order=order)
                active = await listing(api, headers, status=",".join(ACTIVE), sort_order=order, limit=200)
                assert active["jobs"] == [j for j in full["jobs"] if j["status"] in ACTIVE]
                assert {j["status"] for j in active["jobs"]} == set(ACTIVE)
                finished = [j for j in full["jobs"] if j["status"] in FINISHED]
                assert {j["status"] for j in finished} == set(FINISHED)
                for limit, offset in ((2, 0), (2, 2), (2, 4), (64, 0), (1, len(finished) - 1), (3, 50)):
                    page = await listing(api, headers, status=",".join(FINISHED), sort_order=order,
                                         limit=limit, offset=offset)
                    assert page["jobs"] == finished[offset:offset + limit]
                    assert page["pagination"] == {"offset": offset, "limit": limit, "total": len(finished),
                                                  "has_more": offset + limit < len(finished)}
        # a client's lists hold its own jobs only; the admin's, every key's
        assert len((await listing(api, alice))["jobs"]) == 7
        assert len((await listing(api, admin))["jobs"]) == 8
        for prompt_id in long:
            await api.post(f"/api/jobs/{prompt_id}/cancel", headers=alice)


async def queue(api: httpx.AsyncClient, headers: dict[str, str], graph: dict[str, Any]) -> str:
    answer = await api.post("/prompt", json={"prompt": graph}, headers=headers)
    assert answer.status_code == 200, answer.text
    prompt_id: str = answer.json()["prompt_id"]
    return prompt_id


async def listing(api: httpx.AsyncClient, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    answer = await api.get("/api/jobs", params=params, headers=headers)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def task_ids(api: httpx.AsyncClient, headers: dict[str, str]) -> list[str]:
    return [t["id"] for t in (await api.get("/api/tasks", params={"limit": 100}, headers=headers)).json()["tasks"]]


async def until_running(api: httpx.AsyncClient, headers: dict[str, str], count: int) -> None:
    for _ in range(200):
        running = (await api.get("/api/tasks", params={"status": "running"}, headers=headers)).json()["tasks"]
        if len(running) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{count} tasks not running in time")
