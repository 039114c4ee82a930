"""Idempotency-Keys on a real redis-server: one winner among concurrent claims, refusals that survive a restart
and name the job made, expiry, owners kept apart, and releases and binds that never touch a newer claim."""
from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from comfyart.policy.idempotency import KEY_TTL_S, Held
from comfyart.store.idempotency import IdempotencyStore
from comfyart.store.keys import Keys


def idempotency(client: aioredis.Redis, ttl_s: int = KEY_TTL_S) -> IdempotencyStore:
    return IdempotencyStore(client, Keys("test"), ttl_s=ttl_s)


async def test_of_concurrent_claims_of_one_key_exactly_one_wins(redis_client, redis_url):
    other_daemon = aioredis.from_url(redis_url, decode_responses=True)
    try:
        stores = [idempotency(redis_client), idempotency(other_daemon)]
        for round_ in range(60):
            claims = await asyncio.gather(*(stores[i % 2].claim("owner", f"key-{round_}") for i in range(16)))
            winners = [claim for claim in claims if claim.won]
            assert len(winners) == 1, round_
            assert all(claim.held == Held(job_id=None) for claim in claims if not claim.won)
    finally:
        await other_daemon.aclose()


async def test_a_reuse_is_refused_after_a_restart_and_names_the_job(redis_client, redis_url):
    claim = await idempotency(redis_client).claim("owner", "k1")
    assert claim.won and claim.token
    assert await idempotency(redis_client).bind(claim, "01TASK")
    restarted = aioredis.from_url(redis_url, decode_responses=True)  # a new daemon: new client, new store
    try:
        again = await idempotency(restarted).claim("owner", "k1")
        assert not again.won and again.held == Held(job_id="01TASK")
        assert await idempotency(restarted).lookup("owner", "k1") == Held(job_id="01TASK")
    finally:
        await restarted.aclose()


async def test_a_crash_before_the_bind_leaves_the_key_held_with_no_job(redis_client):
    store = idempotency(redis_client)
    assert (await store.claim("owner", "k")).won  # ...and the daemon dies before create or bind
    refused = await idempotency(redis_client).claim("owner", "k")
    assert not refused.won and refused.held == Held(job_id=None)
    assert 0 < await redis_client.ttl("test:owner:owner:idem:k") <= KEY_TTL_S


async def test_keys_expire_with_the_ttl_of_their_claim_bound_or_not(redis_client):
    store = idempotency(redis_client, ttl_s=1)
    bound = await store.claim(None, "bound")
    await store.claim(None, "pending")
    assert await store.bind(bound, "01T")
    assert 0 < await redis_client.pttl("test:idem:bound") <= 1000  # the bind kept the claim's expiry
    await asyncio.sleep(1.1)
    assert await store.lookup(None, "bound") is None and await store.lookup(None, "pending") is None
    assert (await store.claim(None, "bound")).won and (await store.claim(None, "pending")).won


async def test_the_same_key_of_two_owners_or_of_no_owner_never_collides(redis_client):
    store = idempotency(redis_client)
    owners = [None, "a", "b", "config:a", "config:b", "aaaaaaaaaaaa"]
    for owner in owners:
        assert (await store.claim(owner, "same")).won
        assert (await store.claim(owner, "x:idem:same")).won  # a key that looks like a namespace
    for owner in owners:
        assert not (await store.claim(owner, "same")).won
    assert await store.bind(await store.claim("c", "same"), "01C")
    assert await store.lookup("a", "same") == Held(job_id=None)


async def test_a_release_frees_the_key_for_a_retry(redis_client):
    store = idempotency(redis_client)
    claim = await store.claim("owner", "k")
    assert await store.release(claim)  # e.g. the workflow was invalid: no job
    assert await store.lookup("owner", "k") is None
    retry = await store.claim("owner", "k")
    assert retry.won
    refused = await store.claim("owner", "k")
    assert not await store.release(refused) and not await store.bind(refused, "01X")  # a loser owns nothing
    assert await store.lookup("owner", "k") == Held(job_id=None)


async def test_an_old_claim_never_releases_nor_binds_a_newer_one(redis_client):
    store = idempotency(redis_client, ttl_s=1)
    old = await store.claim("owner", "k")
    await asyncio.sleep(1.1)  # the old submission outlived its key...
    new = await store.claim("owner", "k")
    assert new.won and new.token != old.token
    assert not await store.release(old)  # ...and then fails: the newer claim stays
    assert not await store.bind(old, "01OLD")
    assert await store.lookup("owner", "k") == Held(job_id=None)
    assert await store.bind(new, "01NEW")
    assert not await store.release(new)  # a bound key is never released: the job exists
    assert await store.lookup("owner", "k") == Held(job_id="01NEW")


async def test_a_binding_commits_in_the_transaction_of_the_task_record(redis_client):
    store = idempotency(redis_client)
    claim = await store.claim("owner", "k")
    async with redis_client.pipeline(transaction=True) as pipe:  # as TaskStore.create writes a task
        pipe.hset("test:task:01T", mapping={"status": "pending"})
        await store.bind_in(pipe, claim, "01T")
        pipe.zadd("test:tasks", {"01T": 1})
        results = await pipe.execute()
    assert results[1] == 1
    assert await store.lookup("owner", "k") == Held(job_id="01T")
    assert await redis_client.hget("test:task:01T", "status") == "pending"
    await redis_client.script_flush()  # a fresh Redis knows no script: the pipeline loads it before MULTI
    second = await store.claim("owner", "k2")
    async with redis_client.pipeline(transaction=True) as pipe:
        await store.bind_in(pipe, second, "01U")
        assert await pipe.execute() == [1]
    assert await store.lookup("owner", "k2") == Held(job_id="01U")
