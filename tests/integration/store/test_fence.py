"""The fence (store.fence) on a real redis-server: every write a leader's loop makes lands only while the caller's
epoch is the current ``P:leader:epoch``; a stale one raises Fenced, trips the caller's fence and leaves every key
as it was; a user's write (no fence) goes through whatever the epoch."""
from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import pytest
import redis.asyncio as aioredis
import redis.exceptions

from comfyart.errors import Fenced, InvalidTransition
from comfyart.models import NewTask, TaskStatus
from comfyart.store.fence import FENCE, Fence, fence_arg
from comfyart.store.jobs import JobIndex
from comfyart.store.queue import Submission
from comfyart.store.redis import map_redis_errors
from comfyart.store.stores import Stores
from tests.support.graphs import STORED_GRAPH

CURRENT, STALE = 7, 6


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A client that does not decode replies: DUMP's are binary."""
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


async def snapshot(raw: aioredis.Redis) -> dict[bytes, bytes]:
    """Every key of the database and its serialized value."""
    return {key: await raw.dump(key) for key in sorted(await raw.keys("*"))}


async def queued(stores: Stores) -> str:
    return (await stores.tasks.create(NewTask(STORED_GRAPH))).id


async def claimed(stores: Stores, lease_s: float = 30) -> str:
    task_id = await queued(stores)
    assert await stores.queue.claim_ids([task_id], lease_s) == [True]
    return task_id


async def submitted(stores: Stores) -> str:
    task_id = await claimed(stores)
    await stores.queue.record_submission(task_id, backend="b1", prompt_id=f"p-{task_id}", attempts=1)
    return task_id


async def finished(stores: Stores) -> str:
    task_id = await queued(stores)
    await stores.tasks.update(task_id, to=TaskStatus.COMPLETED)
    await stores.client.zadd(JobIndex(stores.tasks).retained, {task_id: 1})
    return task_id


@dataclass(frozen=True)
class FencedCall:
    """A write of a leader's loop: ``setup`` builds the state it changes (unfenced), ``call`` makes it."""

    name: str
    setup: Callable[[Stores], Awaitable[str]]
    call: Callable[[Stores, str], Awaitable[Any]]


async def gone(stores: Stores) -> str:
    """A retained id whose record is gone (the sweep drops it from the set)."""
    await stores.client.zadd(JobIndex(stores.tasks).retained, {"gone": 1})
    return "gone"


FENCED_CALLS = [
    FencedCall("transition", submitted, lambda s, t: s.tasks.update(t, to=TaskStatus.RUNNING, started_ms=1)),
    FencedCall("transition expecting a prompt", submitted,
               lambda s, t: s.tasks.update(t, to=TaskStatus.COMPLETED, expect=("prompt_id", f"p-{t}"))),
    FencedCall("watchdog cancel", submitted, lambda s, t: s.tasks.cancel(t)),
    FencedCall("progress", submitted, lambda s, t: s.tasks.write_progress([(t, f"p-{t}", {"progress": 0.5})])),
    FencedCall("claim", queued, lambda s, t: s.queue.claim_ids([t], 30)),
    FencedCall("claim the head", queued, lambda s, t: s.queue.claim(0.1, 30)),
    FencedCall("record submissions", claimed,
               lambda s, t: s.queue.record_submissions([Submission(t, "b1", "p1", 1, {"1": {}})])),
    FencedCall("requeue", submitted, lambda s, t: s.queue.requeue(t)),
    FencedCall("return expired claims", lambda s: claimed(s, lease_s=-1), lambda s, t: s.queue.return_expired_claims()),
    FencedCall("recover claims", claimed, lambda s, t: s.queue.recover_claimed()),
    FencedCall("release a claim", claimed, lambda s, t: s.queue.release_claim(t)),
    FencedCall("webhook attempt, another due", queued, lambda s, t: s.deliveries.attempted(t, [{"n": 1}], 5)),
    FencedCall("webhook attempt, the last", queued, lambda s, t: s.deliveries.attempted(t, [{"n": 1}], None)),
    FencedCall("stats sample", queued, lambda s, t: s.stats.add({"queued": 1}, keep=5)),
    FencedCall("retention marks a job expired", finished, lambda s, t: JobIndex(s.tasks).mark_expired(t, 1)),
    FencedCall("retention forgets a gone job", gone, lambda s, t: JobIndex(s.tasks).due_candidates(10, 0, 10)),
]


async def fenced_at(epoch: int | None, call: Awaitable[Any]) -> tuple[Any, Fence | None]:
    """``call`` made under a fence of ``epoch`` (None: a user's write); its result, or the exception it raised."""
    fence = None if epoch is None else Fence(epoch)
    token = FENCE.set(fence)
    try:
        return await call, fence
    except Exception as exc:  # noqa: BLE001 - the caller looks at it
        return exc, fence
    finally:
        FENCE.reset(token)


@pytest.mark.parametrize("case", FENCED_CALLS, ids=lambda c: c.name)
async def test_a_leaders_write_lands_under_the_current_epoch(case: FencedCall, stores: Stores, raw):
    await stores.client.set(stores.keys.leader_epoch, CURRENT)
    task_id = await case.setup(stores)
    before = await snapshot(raw)
    result, fence = await fenced_at(CURRENT, case.call(stores, task_id))
    assert not isinstance(result, Exception), result
    assert fence is not None and not fence.tripped.is_set()
    assert await snapshot(raw) != before  # it wrote: the stale case below is a refusal, not a no-op


@pytest.mark.parametrize("case", FENCED_CALLS, ids=lambda c: c.name)
@pytest.mark.parametrize("epoch_now", [str(CURRENT), None], ids=["moved on", "never set"])
async def test_a_stale_leaders_write_is_refused_and_changes_nothing(case: FencedCall, epoch_now: str | None,
                                                                   stores: Stores, raw):
    task_id = await case.setup(stores)
    if epoch_now is not None:
        await stores.client.set(stores.keys.leader_epoch, epoch_now)
    before = await snapshot(raw)
    result, fence = await fenced_at(STALE, case.call(stores, task_id))
    assert isinstance(result, Fenced), result
    assert str(result).startswith("this replica no longer leads: epoch 6 is over")
    assert fence is not None and fence.tripped.is_set()
    assert await snapshot(raw) == before


@pytest.mark.parametrize("case", FENCED_CALLS, ids=lambda c: c.name)
async def test_a_users_write_is_not_fenced_whatever_the_epoch(case: FencedCall, stores: Stores, raw):
    await stores.client.set(stores.keys.leader_epoch, CURRENT)
    task_id = await case.setup(stores)
    before = await snapshot(raw)
    result, _ = await fenced_at(None, case.call(stores, task_id))
    assert not isinstance(result, Exception), result
    assert await snapshot(raw) != before


def in_context(fence: Fence | None, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
    """``coro`` in a task of its own whose context holds ``fence``: what a leader's loop (or an API request, with
    None) runs in."""
    context = contextvars.copy_context()
    context.run(FENCE.set, fence)
    return asyncio.get_running_loop().create_task(coro, context=context)


async def test_one_batch_of_transitions_refuses_only_the_stale_callers_item(stores: Stores):
    await stores.client.set(stores.keys.leader_epoch, CURRENT)
    stale_item, users_item, leaders_item = [await submitted(stores) for _ in range(3)]
    stale, current = Fence(STALE), Fence(CURRENT)
    batches_before = stores.tasks.transitions.batches
    results = await asyncio.gather(
        in_context(stale, stores.tasks.update(stale_item, to=TaskStatus.RUNNING)),
        in_context(None, stores.tasks.cancel(users_item)),
        in_context(current, stores.tasks.update(leaders_item, to=TaskStatus.RUNNING)),
        in_context(stale, stores.tasks.update("nope", to=TaskStatus.RUNNING)),  # fenced before it is looked up
        return_exceptions=True)
    assert stores.tasks.transitions.batches == batches_before + 1
    assert isinstance(results[0], Fenced) and isinstance(results[3], Fenced)
    assert results[1] == TaskStatus.PENDING and results[2] == TaskStatus.PENDING
    assert stale.tripped.is_set() and not current.tripped.is_set()
    statuses = [t.status for t in await stores.tasks.get_many([stale_item, users_item, leaders_item]) if t]
    assert statuses == [TaskStatus.PENDING, TaskStatus.CANCELED, TaskStatus.RUNNING]


async def test_a_refused_transition_is_fenced_before_it_is_refused_for_its_status(stores: Stores):
    """A stale leader learns that it no longer leads, not that the task moved on (which the new leader did)."""
    await stores.client.set(stores.keys.leader_epoch, CURRENT)
    task_id = await queued(stores)
    await stores.tasks.update(task_id, to=TaskStatus.COMPLETED)
    result, _ = await fenced_at(STALE, stores.tasks.update(task_id, to=TaskStatus.COMPLETED))
    assert isinstance(result, Fenced)
    result, _ = await fenced_at(CURRENT, stores.tasks.update(task_id, to=TaskStatus.COMPLETED))
    assert isinstance(result, InvalidTransition)


async def test_fence_arg_is_the_contexts_epoch():
    assert fence_arg() == ""

    async def inside() -> str:
        return fence_arg()

    assert await in_context(Fence(42), inside()) == "42"
    assert await in_context(None, inside()) == ""


async def test_other_script_errors_are_not_fenced(stores: Stores):
    fence = Fence(CURRENT)
    token = FENCE.set(fence)
    try:
        with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"), map_redis_errors():
            await stores.client.set("test:a-string", "x")
            await stores.client.lpush("test:a-string", "y")
    finally:
        FENCE.reset(token)
    assert not fence.tripped.is_set()
