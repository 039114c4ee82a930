"""The replicas' registry on a real Redis: a heartbeat lists a replica, an expired record is pruned from the list
on the next read, a clean stop removes it at once; the leader's lease and the elections are read as ``store.lease``
writes them."""
from __future__ import annotations

import asyncio
import json

from comfyart.store.replicas import LeaderRecord, ReplicaRecord, ReplicaStore
from comfyart.store.stores import Stores


def record(name: str, heartbeat_ms: int = 1000, role: str = "standby", **fleet: str) -> ReplicaRecord:
    return ReplicaRecord(name=name, url=f"http://{name}:8100", version="0.1.0", started_ms=500,
                         heartbeat_ms=heartbeat_ms, role=role, pid=4242, fleet=fleet or {"pool": "aa"})


async def test_a_beat_lists_the_replica_with_its_whole_record(stores: Stores, redis_client):
    replicas = ReplicaStore(stores.client, stores.keys)
    await replicas.beat(record("b", 2000, role="leader", pool="p1", docker="d1"), ttl_ms=60_000)
    await replicas.beat(record("a", 1500), ttl_ms=60_000)

    live = await replicas.live()
    assert [r.name for r in live] == ["a", "b"]
    assert live[1] == record("b", 2000, role="leader", pool="p1", docker="d1")
    assert await redis_client.zscore("test:replicas", "b") == 2000
    assert 0 < await redis_client.pttl("test:replica:b") <= 60_000


async def test_a_later_beat_replaces_the_record(stores: Stores):
    replicas = ReplicaStore(stores.client, stores.keys)
    await replicas.beat(record("a", 1000, role="standby"), ttl_ms=60_000)
    await replicas.beat(record("a", 3000, role="leader"), ttl_ms=60_000)

    [only] = await replicas.live()
    assert (only.heartbeat_ms, only.role) == (3000, "leader")


async def test_an_expired_record_is_pruned_from_the_list(stores: Stores, redis_client):
    replicas = ReplicaStore(stores.client, stores.keys)
    await replicas.beat(record("gone"), ttl_ms=50)
    await replicas.beat(record("alive"), ttl_ms=60_000)
    await asyncio.sleep(0.15)

    assert [r.name for r in await replicas.live()] == ["alive"]
    assert await redis_client.zrange("test:replicas", 0, -1) == ["alive"]


async def test_an_unreadable_record_is_left_out_not_an_error(stores: Stores, redis_client):
    replicas = ReplicaStore(stores.client, stores.keys)
    await replicas.beat(record("good"), ttl_ms=60_000)
    await redis_client.hset("test:replica:odd", mapping={"name": "odd", "pid": "not a number"})
    await redis_client.zadd("test:replicas", {"odd": 1})

    assert [r.name for r in await replicas.live()] == ["good"]


async def test_leave_removes_the_replica_at_once(stores: Stores, redis_client):
    replicas = ReplicaStore(stores.client, stores.keys)
    await replicas.beat(record("a"), ttl_ms=60_000)
    await replicas.beat(record("b"), ttl_ms=60_000)
    await replicas.leave("a")

    assert [r.name for r in await replicas.live()] == ["b"]
    assert not await redis_client.exists("test:replica:a")
    await replicas.leave("never-there")  # nothing to remove: no error


async def test_the_leader_and_the_epoch_as_the_lease_writes_them(stores: Stores, redis_client):
    replicas = ReplicaStore(stores.client, stores.keys)
    assert await replicas.leader() is None and await replicas.epoch() == 0

    await redis_client.set("test:leader", "host-1:8100 7 1700000000123", px=60_000)
    await redis_client.set("test:leader:epoch", 7)
    assert await replicas.leader() == LeaderRecord("host-1:8100", 7, 1700000000123)
    assert await replicas.epoch() == 7

    await redis_client.set("test:leader", "garbage")
    assert await replicas.leader() is None


async def test_elections_newest_first_and_capped(stores: Stores, redis_client):
    replicas = ReplicaStore(stores.client, stores.keys)
    assert await replicas.elections(10) == []
    for epoch in (1, 2, 3):
        await redis_client.lpush("test:leader:history", json.dumps(
            {"epoch": epoch, "replica": f"r{epoch}", "since_ms": 1000 * epoch, "reason": "expired"}))
    await redis_client.lpush("test:leader:history", "not json")

    elections = await replicas.elections(3)  # the newest three entries, one of them unreadable
    assert [e["epoch"] for e in elections] == [3, 2]
    assert elections[0] == {"epoch": 3, "replica": "r3", "since_ms": 3000, "reason": "expired"}
    assert [e["epoch"] for e in await replicas.elections(10)] == [3, 2, 1]
