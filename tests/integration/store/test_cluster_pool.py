"""The leader's pool snapshot and inventory documents in Redis (``store.cluster_pool``) on a real redis-server: a
snapshot is written under the caller's fence (a leader whose term is over is refused, its snapshot not written), each
publication has a new version, and a document is stored by digest, its bytes once."""
from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from comfyart.errors import Fenced
from comfyart.store.cluster_pool import ClusterPool
from comfyart.store.fence import FENCE, Fence
from comfyart.store.keys import Keys

CURRENT, STALE = 7, 6


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[ClusterPool]:
    client = aioredis.from_url(redis_url)  # bytes replies: documents are compressed
    keys = Keys("cp-test")
    await client.delete(keys.leader_epoch, f"{keys.prefix}:cluster:pool", f"{keys.prefix}:cluster:inventory:d1")
    await client.set(keys.leader_epoch, CURRENT)
    yield ClusterPool(client, keys)
    await client.aclose()


async def test_the_leader_publishes_versions_and_a_stale_one_is_refused(store: ClusterPool):
    assert await store.version() is None and await store.latest() is None
    token = FENCE.set(Fence(CURRENT))
    try:
        first = await store.publish(b'{"n": 1}')
        second = await store.publish(b'{"n": 2}')
    finally:
        FENCE.reset(token)
    assert (first, second) == ("7:1", "7:2")
    latest = await store.latest()
    assert latest is not None and (latest.version, latest.json) == ("7:2", b'{"n": 2}')
    stale = Fence(STALE)
    token = FENCE.set(stale)
    try:
        with pytest.raises(Fenced):
            await store.publish(b'{"n": "stale"}')
    finally:
        FENCE.reset(token)
    assert stale.tripped.is_set()
    assert await store.version() == "7:2"


async def test_a_document_is_stored_once_by_digest(store: ClusterPool):
    assert await store.inventory("d1") is None
    await store.put_inventory("d1", b"\x78\x9c\x00compressed", b'["emb"]')
    await store.put_inventory("d1", b"other bytes", b"")  # the same digest: the bytes are the same anyway
    assert await store.inventory("d1") == (b"\x78\x9c\x00compressed", b'["emb"]')
    assert 0 < await store.redis.ttl(store.inventory_key("d1")) <= 7 * 24 * 3600
