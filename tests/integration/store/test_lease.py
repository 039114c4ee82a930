"""The leader's lease on the real redis-server (store.lease): one holder at a time, the fencing epoch that only
grows, renew and release that touch only their own term, the capped elections history, and lease calls that do
not wait for a busy shared pool."""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from comfyart.store.keys import Keys
from comfyart.store.lease import HISTORY_KEPT, Lease, LeaseStore, parse_lease
from comfyart.store.stores import Stores

KEYS = Keys("test")
LEASE_MS = 2000

Opener = Callable[[], Awaitable[LeaseStore]]


@pytest.fixture
async def open_lease(redis_url: str) -> AsyncIterator[Opener]:
    """Factory: a LeaseStore over a client of its own (as each replica has)."""
    opened: list[tuple[aioredis.Redis, LeaseStore]] = []

    async def open_one() -> LeaseStore:
        client = aioredis.from_url(redis_url, decode_responses=True)
        opened.append((client, LeaseStore(client, KEYS)))
        return opened[-1][1]

    yield open_one
    for client, lease in opened:
        await lease.aclose()
        await client.aclose()


async def redis_time_ms(client: aioredis.Redis) -> int:
    seconds, micros = await client.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def test_two_replicas_racing_for_the_lease_exactly_one_wins(open_lease, redis_client):
    a, b = await open_lease(), await open_lease()
    for _ in range(20):
        await redis_client.delete(KEYS.leader)
        got_a, got_b = await asyncio.gather(a.acquire("a", LEASE_MS, "start"), b.acquire("b", LEASE_MS, "start"))
        assert (got_a is None) != (got_b is None)
        winner = got_a or got_b
        assert winner is not None
        assert await a.holder() == winner
        assert await a.epoch() == winner.epoch


async def test_a_held_lease_is_refused_to_another_replica_until_it_expires(open_lease, redis_client):
    a, b = await open_lease(), await open_lease()
    first = await a.acquire("a", 300, "start")
    assert first is not None
    assert await b.acquire("b", LEASE_MS, "takeover") is None
    await asyncio.sleep(0.4)
    second = await b.acquire("b", LEASE_MS, "takeover")
    assert second is not None and second.epoch > first.epoch
    assert await a.renew("a", first.epoch, LEASE_MS) is False  # the term is over
    assert await b.renew("b", second.epoch, LEASE_MS) is True
    assert await a.holder() == second


async def test_a_renew_extends_only_its_own_term(open_lease, redis_client):
    a = await open_lease()
    lease = await a.acquire("a", 500, "start")
    assert lease is not None
    assert await a.renew("a", lease.epoch, 5000) is True
    assert 4000 < await redis_client.pttl(KEYS.leader) <= 5000
    assert await a.renew("a", lease.epoch - 1, 5000) is False
    assert await a.renew("b", lease.epoch, 5000) is False
    await redis_client.set(KEYS.leader, f"b {lease.epoch + 1} 1", px=5000)  # taken behind a's back
    assert await a.renew("a", lease.epoch, 5000) is False
    assert await redis_client.get(KEYS.leader) == f"b {lease.epoch + 1} 1"


async def test_a_lease_lost_while_the_epoch_stayed_is_set_again_by_its_renew(open_lease, redis_client):
    """Redis restarted from a snapshot taken before the lease's last write, or the key was lost: nobody was
    elected meanwhile (the epoch is still this term's), so the term goes on."""
    a = await open_lease()
    lease = await a.acquire("a", LEASE_MS, "start")
    assert lease is not None
    await redis_client.delete(KEYS.leader)
    assert await a.renew("a", lease.epoch, LEASE_MS, since_ms=lease.since_ms) is True
    assert await a.holder() == lease
    assert await redis_client.pttl(KEYS.leader) > LEASE_MS - 500
    await redis_client.delete(KEYS.leader)
    await redis_client.incr(KEYS.leader_epoch)  # an election happened (and its lease is gone too)
    assert await a.renew("a", lease.epoch, LEASE_MS) is False
    assert await a.holder() is None


async def test_a_renew_without_since_writes_the_redis_clock(open_lease, redis_client):
    a = await open_lease()
    lease = await a.acquire("a", LEASE_MS, "start")
    assert lease is not None
    await redis_client.delete(KEYS.leader)
    before = await redis_time_ms(redis_client)
    assert await a.renew("a", lease.epoch, LEASE_MS) is True
    holder = await a.holder()
    assert holder is not None and holder.epoch == lease.epoch and holder.since_ms >= before


async def test_the_same_replica_name_takes_its_own_lease_at_once_under_a_new_epoch(open_lease):
    """A restarted process under the same name (its predecessor was killed holding the lease) does not wait for
    the lease to expire; the predecessor's epoch is fenced off."""
    old, new = await open_lease(), await open_lease()
    before = await old.acquire("host:8100", 60_000, "start")
    assert before is not None
    after = await new.acquire("host:8100", 60_000, "start")
    assert after is not None and after.epoch > before.epoch
    assert await new.holder() == after
    assert await old.renew("host:8100", before.epoch, 60_000) is False
    assert await old.release("host:8100", before.epoch) is False
    assert await new.holder() == after


async def test_the_epoch_is_never_below_the_redis_clock_so_a_lost_counter_cannot_repeat_one(open_lease, redis_client):
    a = await open_lease()
    await redis_client.set(KEYS.leader_epoch, "5")
    before = await redis_time_ms(redis_client)
    first = await a.acquire("a", LEASE_MS, "start")
    assert first is not None and first.epoch >= before and first.since_ms >= before
    assert await a.release("a", first.epoch)
    await redis_client.delete(KEYS.leader_epoch)  # Redis lost the counter (persistence gap)
    await asyncio.sleep(0.01)
    second = await a.acquire("a", LEASE_MS, "again")
    assert second is not None and second.epoch > first.epoch
    await redis_client.set(KEYS.leader_epoch, str(10 ** 14))  # ahead of the clock: counted on from there
    third = await a.acquire("a", LEASE_MS, "again")
    assert third is not None and third.epoch == 10 ** 14 + 1
    assert await redis_client.get(KEYS.leader_epoch) == str(10 ** 14 + 1)
    assert await redis_client.ttl(KEYS.leader_epoch) == -1  # never expires


async def test_a_release_deletes_only_its_own_term(open_lease, redis_client):
    a, b = await open_lease(), await open_lease()
    lease = await a.acquire("a", LEASE_MS, "start")
    assert lease is not None
    assert await b.release("b", lease.epoch) is False
    assert await b.release("a", lease.epoch - 1) is False
    assert await a.holder() == lease
    assert await a.release("a", lease.epoch) is True
    assert await a.holder() is None
    assert await a.release("a", lease.epoch) is False
    assert await a.epoch() == lease.epoch  # the epoch stays: the next term's is above it
    taken = await b.acquire("b", LEASE_MS, "takeover")
    assert taken is not None and taken.epoch > lease.epoch


async def test_the_elections_history_is_newest_first_and_capped(open_lease, redis_client):
    a = await open_lease()
    leases = []
    for i in range(HISTORY_KEPT + 10):
        lease = await a.acquire(f"r{i % 3}", LEASE_MS, f"reason {i}")
        assert lease is not None
        leases.append(lease)
        await a.release(lease.replica, lease.epoch)
    assert await redis_client.llen(KEYS.leader_history) == HISTORY_KEPT
    history = await a.history(HISTORY_KEPT + 10)
    assert len(history) == HISTORY_KEPT
    assert history[0] == {"epoch": leases[-1].epoch, "replica": leases[-1].replica,
                          "since_ms": leases[-1].since_ms, "reason": f"reason {HISTORY_KEPT + 9}"}
    assert [entry["epoch"] for entry in history] == [lease.epoch for lease in reversed(leases)][:HISTORY_KEPT]
    assert len(await a.history(3)) == 3


async def test_a_reason_with_quotes_stays_valid_json(open_lease, redis_client):
    a = await open_lease()
    assert await a.acquire("a", LEASE_MS, 'he said "hi"\n/\\') is not None
    raw = await redis_client.lindex(KEYS.leader_history, 0)
    assert json.loads(raw)["reason"] == 'he said "hi"\n/\\'


async def test_reads_of_nothing_and_of_foreign_values(open_lease, redis_client):
    a = await open_lease()
    assert await a.holder() is None
    assert await a.epoch() == 0
    assert await a.history() == []
    await redis_client.set(KEYS.leader, "garbage")
    await redis_client.lpush(KEYS.leader_history, "not json", "[1]")
    assert await a.holder() is None
    assert await a.history() == []
    assert await a.acquire("a", LEASE_MS, "start") is None  # a foreign value is held by "someone else"


@pytest.mark.parametrize("value, lease", [("a 1 2", Lease("a", 1, 2)), ("host:8100 17 99", Lease("host:8100", 17, 99)),
                                          ("a 1", None), ("a x 2", None), (" 1 2", None), ("a 1 2 3", None)])
def test_parse_lease(value, lease):
    assert parse_lease(value) == lease


async def test_lease_calls_do_not_wait_for_an_exhausted_shared_pool(redis_url):
    """A busy tracker can hold every connection of the shared pool; a renew must still answer at once."""
    shared = aioredis.Redis.from_pool(aioredis.BlockingConnectionPool.from_url(
        redis_url, decode_responses=True, max_connections=1, timeout=10))
    store = LeaseStore(shared, KEYS)
    try:
        lease = await store.acquire("a", LEASE_MS, "start")
        assert lease is not None
        busy = asyncio.create_task(shared.blpop(["test:nothing"], timeout=2))  # holds the shared pool's one
        await asyncio.sleep(0.1)
        started = time.monotonic()
        assert await store.renew("a", lease.epoch, LEASE_MS) is True
        assert time.monotonic() - started < 0.5
        assert not busy.done()
        await busy
    finally:
        await store.aclose()
        await shared.aclose()


async def test_the_stores_hold_a_lease_store_and_close_it(redis_url, redis_client):
    before = len(await redis_client.client_list())
    stores = Stores.on(aioredis.from_url(redis_url, decode_responses=True), "test")
    lease = await stores.lease.acquire("a", LEASE_MS, "start")
    assert lease is not None and await stores.lease.holder() == lease
    assert len(await redis_client.client_list()) == before + 2  # the shared pool's and the lease's own
    await stores.aclose()
    await asyncio.sleep(0.1)
    assert len(await redis_client.client_list()) == before
