"""The heartbeat on a real Redis: the first beat joins the replica, a change of role is written at once (not at the
next beat), a clean stop removes the record, and a Redis that does not answer is waited out, not a crash."""
from __future__ import annotations

import asyncio
import contextlib
import json

import redis.asyncio as aioredis

from comfyart.cluster.replicas import ClusterFigures, Heartbeat, Replica, ReplicaIdentity
from comfyart.store.keys import Keys
from comfyart.store.replicas import ReplicaStore
from tests.support.ports import free_port

IDENTITY = ReplicaIdentity(name="r1", url="http://r1:8100", version="0.1.0", started_ms=1, pid=1,
                           fleet={"pool": "aa"})


async def wait_until(condition, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not await condition():
            await asyncio.sleep(0.02)


async def test_joins_writes_a_new_role_at_once_and_leaves_on_stop(redis_client):
    store = ReplicaStore(redis_client, Keys("test"))
    role = {"leading": False}
    heartbeat = Heartbeat(store, IDENTITY, interval_s=30.0, leading=lambda: role["leading"])
    assert heartbeat.ttl_ms == 90_000
    task = asyncio.create_task(heartbeat.run())
    try:
        await asyncio.wait_for(heartbeat.joined.wait(), 5)
        [record] = await store.live()
        assert (record.name, record.role, record.url) == ("r1", "standby", "http://r1:8100")
        assert 0 < await redis_client.pttl("test:replica:r1") <= 90_000

        role["leading"] = True  # a heartbeat every 30 s, yet the new role shows within a moment

        async def leader_written() -> bool:
            return [r.role for r in await store.live()] == ["leader"]
        await wait_until(leader_written, timeout_s=2.0)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert await store.live() == []
    assert not await redis_client.exists("test:replica:r1")


async def test_beats_again_at_each_interval(redis_client):
    store = ReplicaStore(redis_client, Keys("test"))
    heartbeat = Heartbeat(store, IDENTITY, interval_s=0.1, leading=lambda: False)
    task = asyncio.create_task(heartbeat.run())
    try:
        await asyncio.wait_for(heartbeat.joined.wait(), 5)
        first = (await store.live())[0].heartbeat_ms

        async def beaten_again() -> bool:
            return (await store.live())[0].heartbeat_ms > first
        await wait_until(beaten_again)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_redis_that_does_not_answer_is_waited_out():
    client = aioredis.from_url(f"redis://127.0.0.1:{free_port()}/0", decode_responses=True, socket_timeout=0.5)
    heartbeat = Heartbeat(ReplicaStore(client, Keys("test")), IDENTITY, interval_s=0.05, leading=lambda: False)
    task = asyncio.create_task(heartbeat.run())
    try:
        await asyncio.sleep(0.5)  # several failed beats
        assert not task.done() and not heartbeat.joined.is_set()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)  # its leave fails too, quietly and in bounded time
        await client.aclose()


async def test_the_figures_count_each_election_once(redis_client):
    store = ReplicaStore(redis_client, Keys("test"))
    heartbeat = Heartbeat(store, IDENTITY, interval_s=30.0, leading=lambda: True)
    replica = Replica(store, heartbeat)
    assert await replica.figures() == ClusterFigures(replicas=0, leader=False, epoch=0, elections=0)

    await heartbeat.beat(True)
    for epoch in (4, 5):
        await redis_client.lpush("test:leader:history", json.dumps({"epoch": epoch, "replica": "r1"}))
    await redis_client.set("test:leader:epoch", 5)
    await redis_client.set("test:leader", "r1 5 1000")
    assert await replica.figures() == ClusterFigures(replicas=1, leader=True, epoch=5, elections=2)
    assert (await replica.figures()).elections == 2  # read again: nothing new

    await redis_client.lpush("test:leader:history", json.dumps({"epoch": 6, "replica": "r2"}))
    await redis_client.set("test:leader", "r2 6 2000")
    assert await replica.figures() == ClusterFigures(replicas=1, leader=False, epoch=5, elections=3)
