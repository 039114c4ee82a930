"""Task events across replicas (``store.eventlog`` + ``cluster.bridge``): every replica's hub gets every event of
a change any replica made, once, in commit order; a bridge resumes after Redis restarts, and cuts its subscribers
with ``lagged`` when Redis came back without the events."""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from comfyart.bus import Event, EventHub
from comfyart.cluster.bridge import build as build_bridge
from comfyart.models import ComfyPrompt, NewTask, TaskStatus
from comfyart.store.stores import Stores
from tests.support.graphs import STORED_GRAPH
from tests.support.ports import free_port
from tests.support.redis import RestartableRedis


@contextlib.asynccontextmanager
async def replica(url: str, *, replicated: bool = True) -> AsyncIterator[tuple[Stores, EventHub]]:
    """The stores of one replica on ``url`` with its hub, and its bridge running."""
    hub = EventHub()
    client = aioredis.from_url(url, decode_responses=True)
    stores = Stores.on(client, "test", events=hub, replicated=replicated)
    bridge = await build_bridge(stores, hub)
    task = asyncio.create_task(bridge.run()) if bridge is not None else None
    try:
        yield stores, hub
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await client.aclose()


async def a_life(stores: Stores) -> str:
    """One task's whole life: created, submitted, progress, running, completed."""
    task = await stores.tasks.create(NewTask(STORED_GRAPH, owner="alice",
                                             comfy=ComfyPrompt("cp1", 1, "client-1")))
    assert await stores.queue.claim_id(task.id, 30)
    await stores.queue.record_submission(task.id, backend="b", prompt_id="p1", attempts=1)
    await stores.tasks.update(task.id, to=TaskStatus.RUNNING, started_ms=1)
    await stores.tasks.write_progress([(task.id, "p1", {"progress": 0.5, "node": "3"})])
    await stores.tasks.update(task.id, to=TaskStatus.COMPLETED, finished_ms=2, outputs=[])
    return task.id


async def collect(hub: EventHub, until_status: str, timeout_s: float = 5) -> list[Event]:
    events: list[Event] = []
    with hub.subscribe() as subscription:
        async with asyncio.timeout(timeout_s):
            async for event in subscription:
                events.append(event)
                if event.get("status") == until_status or event["type"] == "lagged":
                    return events
    return events


def shape(event: Event) -> tuple[Any, ...]:
    """An event without what differs from one run to the next (ids and times)."""
    return (event["type"], event.get("status"), event.get("previous"), event.get("client_id"), event.get("owner"),
            sorted(event))


async def test_every_replica_hears_every_change_once_as_one_process_does(redis_url: str):
    async with replica(redis_url, replicated=False) as (alone, alone_hub):
        heard_alone = asyncio.create_task(collect(alone_hub, "completed"))
        await asyncio.sleep(0)
        await a_life(alone)
        expected = [shape(e) for e in await heard_alone]
    async with replica(redis_url) as (a, hub_a), replica(redis_url) as (_, hub_b):
        heard = [asyncio.create_task(collect(hub, "completed")) for hub in (hub_a, hub_b)]
        await asyncio.sleep(0)
        task_id = await a_life(a)
        on_a, on_b = await asyncio.gather(*heard)
    assert on_a == on_b  # the writer's hub hears its own changes from the stream, in the same order
    assert [shape(e) for e in on_b] == expected
    assert all(e["id"] == task_id for e in on_b)
    assert len(expected) == 5  # created, submitted, running, progress, completed


async def test_a_bridge_resumes_after_redis_restarts(tmp_path):
    server = RestartableRedis(free_port(), str(tmp_path))
    await asyncio.to_thread(server.start)
    try:
        async with replica(server.url) as (a, _), replica(server.url) as (_, hub_b):
            heard = asyncio.create_task(collect(hub_b, "completed", timeout_s=20))
            await asyncio.sleep(0)
            task = await a.tasks.create(NewTask(STORED_GRAPH))
            await asyncio.sleep(0.2)
            await asyncio.to_thread(server.restart)
            await until_answers(a)
            await a.tasks.update(task.id, to=TaskStatus.COMPLETED, finished_ms=1)
            events = await heard
        assert [(e["type"], e.get("status")) for e in events] == [("task", "pending"), ("task", "completed")]
    finally:
        await asyncio.to_thread(server.stop)


async def test_subscribers_are_cut_when_redis_comes_back_without_the_events(tmp_path):
    server = RestartableRedis(free_port(), str(tmp_path))
    await asyncio.to_thread(server.start)
    try:
        async with replica(server.url) as (a, _), replica(server.url) as (_, hub_b):
            await a.tasks.create(NewTask(STORED_GRAPH))
            heard = asyncio.create_task(collect(hub_b, "never", timeout_s=20))
            await asyncio.sleep(0.2)
            await asyncio.to_thread(server.restart, keep_data=False)
            await until_answers(a)
            await a.tasks.create(NewTask(STORED_GRAPH))
            events = await heard
        assert events[-1]["type"] == "lagged"
    finally:
        await asyncio.to_thread(server.stop)


async def until_answers(stores: Stores) -> None:
    for _ in range(100):
        try:
            await stores.tasks.ping()
            return
        except Exception:  # noqa: BLE001 - not yet
            await asyncio.sleep(0.1)
    pytest.fail("Redis did not come back")


async def test_the_stream_keeps_about_events_kept_entries(redis_url: str):
    client = aioredis.from_url(redis_url, decode_responses=True)
    try:
        stores = Stores.on(client, "kept", replicated=True, events_kept=1000)
        for _ in range(3000 // 5):
            await a_life(stores)
        length = await client.xlen(stores.keys.events)
    finally:
        await client.aclose()
    # MAXLEN ~ trims whole macro nodes (100 entries each by default): about the cap, never the 3,000 written
    assert 1000 <= length < 1200
