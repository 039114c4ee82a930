"""The queue (store.queue) on a real redis-server: order by priority and age, claims and their leases, submissions,
requeues, and the migration of an old queue."""
from __future__ import annotations

import asyncio

import pytest

from comfyart.errors import InvalidTransition, NotFound
from comfyart.models import NewTask, TaskStatus
from comfyart.store.queue import Submission, TaskQueue
from comfyart.store.stores import Stores
from comfyart.store.tasks import TaskStore
from tests.support.graphs import STORED_GRAPH


async def test_create_get_and_the_queue_order(store: TaskStore, queue: TaskQueue):
    first, second = await store.create(NewTask(STORED_GRAPH)), await store.create(NewTask(STORED_GRAPH))
    assert first.id < second.id  # ULIDs sort by creation
    fetched = await store.get(first.id)
    assert fetched.status == TaskStatus.PENDING and fetched.prompt == STORED_GRAPH and fetched.attempts == 0
    assert await queue.length() == 2
    assert await queue.claim(0.1, 30) == first.id  # oldest first
    assert await queue.claim(0.1, 30) == second.id
    assert await queue.claim(0.1, 30) is None
    assert set(await store.redis.zrange(store.keys.claims, 0, -1)) == {first.id, second.id}


async def test_submission_bookkeeping_and_requeue(store: TaskStore, queue: TaskQueue):
    task = await store.create(NewTask(STORED_GRAPH))
    await queue.claim(0.1, 30)
    await queue.record_submission(task.id, backend="b1", prompt_id="p1", attempts=1)
    assert await queue.task_of_prompt("p1") == task.id
    assert [t.id for t in await store.active_tasks()] == [task.id]
    assert await store.redis.zcard(store.keys.claims) == 0
    await store.update(task.id, to=TaskStatus.PENDING, backend=None, prompt_id=None)
    await queue.requeue(task.id)
    other = await store.create(NewTask(STORED_GRAPH))
    assert await queue.claim(0.1, 30) == task.id  # the requeued task goes before newer ones
    assert await queue.claim(0.1, 30) == other.id
    record = await store.get(task.id)
    assert record.backend is None and record.prompt_id is None and record.attempts == 1


async def test_claimed_but_unsubmitted_tasks_return_to_the_queue(store: TaskStore, queue: TaskQueue):
    first, second = await store.create(NewTask(STORED_GRAPH)), await store.create(NewTask(STORED_GRAPH))
    await queue.claim(0.1, 30)
    await queue.claim(0.1, 30)
    assert await queue.recover_claimed() == 2
    assert await queue.claim(0.1, 30) == first.id and await queue.claim(0.1, 30) == second.id


async def test_an_expired_claim_returns_to_the_head_of_the_queue_and_its_late_submission_is_refused(
        store: TaskStore, queue: TaskQueue):
    first, second = await store.create(NewTask(STORED_GRAPH)), await store.create(NewTask(STORED_GRAPH))
    assert await queue.claim(0.1, 0.2) == first.id
    assert await queue.return_expired_claims() == []  # the lease still runs
    await asyncio.sleep(0.3)
    assert await queue.return_expired_claims() == [first.id]
    assert await queue.waiting() == 2
    with pytest.raises(InvalidTransition, match="claim expired"):
        await queue.record_submission(first.id, backend="b", prompt_id="late", attempts=1)
    assert await queue.task_of_prompt("late") is None and await store.active_tasks() == []
    assert await queue.claim(0.1, 30) == first.id and await queue.claim(0.1, 30) == second.id


async def test_a_task_is_always_in_exactly_one_of_queue_claims_and_active(store: TaskStore, queue: TaskQueue):
    tasks = [await store.create(NewTask(STORED_GRAPH)) for _ in range(6)]

    async def where(task_id):
        queue = await store.redis.zrange(store.keys.queue, 0, -1)
        claims = await store.redis.zrange(store.keys.claims, 0, -1)
        active = await store.redis.smembers(store.keys.active)
        return [queue.count(task_id), claims.count(task_id), int(task_id in active)]

    claimed = [await queue.claim(0.1, 30) for _ in range(4)]
    await queue.record_submission(claimed[0], backend="b", prompt_id="p0", attempts=1)
    await queue.record_submission(claimed[1], backend="b", prompt_id="p1", attempts=1)
    await queue.requeue(claimed[1])
    await queue.requeue(claimed[1])  # twice: still once in the queue
    await store.cancel(claimed[2])
    placements = {t.id: await where(t.id) for t in tasks}
    assert placements[claimed[0]] == [0, 0, 1]
    assert placements[claimed[1]] == [1, 0, 0]
    assert placements[claimed[2]] == [0, 0, 0] and (await store.get(claimed[2])).status == TaskStatus.CANCELED
    assert placements[claimed[3]] == [0, 1, 0]
    assert placements[tasks[4].id] == placements[tasks[5].id] == [1, 0, 0]


async def test_a_canceled_task_is_never_submitted(store: TaskStore, queue: TaskQueue):
    task = await store.create(NewTask(STORED_GRAPH))
    assert await queue.claim(0.1, 30) == task.id
    assert await store.cancel(task.id) == TaskStatus.PENDING
    with pytest.raises(InvalidTransition, match="canceled"):
        await queue.record_submission(task.id, backend="b", prompt_id="p", attempts=1)
    with pytest.raises(InvalidTransition):
        await store.cancel(task.id)  # a final task cannot be canceled again
    assert await queue.waiting() == 0


async def test_priorities_strict_between_levels_fifo_within_and_kept_on_requeue(store: TaskStore, queue: TaskQueue):
    low = await store.create(NewTask(STORED_GRAPH, priority=-1))
    normal = [await store.create(NewTask(STORED_GRAPH)) for _ in range(2)]
    high = await store.create(NewTask(STORED_GRAPH, priority=1))
    ids, total = await queue.peek(10)
    assert ids == [high.id, normal[0].id, normal[1].id, low.id] and total == 4
    assert await queue.claim_id(high.id, 30) and not await queue.claim_id(high.id, 30)  # once only
    await queue.requeue(high.id)  # a retry keeps its place: still ahead of every normal task
    assert (await queue.peek(1))[0] == [high.id]
    record = await store.get(low.id)
    assert record.priority == -1 and (await store.get(normal[0].id)).priority == 0
    raw = await store.redis.hgetall(f"{store.keys.prefix}:task:{normal[0].id}")
    assert "priority" not in raw and "requires" not in raw  # defaults cost no memory


async def test_ageing_lets_an_old_low_task_overtake_newer_normal_ones(redis_client):
    stores = Stores.on(redis_client, "ageing", ageing_s=60)
    store, queue = stores.tasks, stores.queue
    low = await store.create(NewTask(STORED_GRAPH, priority=-1))
    newer = await store.create(NewTask(STORED_GRAPH))
    assert (await queue.peek(2))[0] == [newer.id, low.id]
    # 61 s later (as if): the low task has waited one level's worth, and beats a new normal task
    await store.redis.hset(f"ageing:task:{low.id}", "created_ms", low.created_ms - 61_000)
    await queue.requeue(low.id)
    assert (await queue.peek(2))[0] == [low.id, newer.id]


async def test_expired_claims_return_at_their_place_by_priority(store: TaskStore, queue: TaskQueue):
    normal = await store.create(NewTask(STORED_GRAPH))
    high = await store.create(NewTask(STORED_GRAPH, priority=1))
    assert await queue.claim_id(high.id, 0.05)
    await asyncio.sleep(0.1)
    assert await queue.return_expired_claims() == [high.id]
    assert (await queue.peek(2))[0] == [high.id, normal.id]


async def test_a_list_queue_from_the_previous_version_is_migrated(store: TaskStore, queue: TaskQueue):
    tasks = [await store.create(NewTask(STORED_GRAPH, priority=p)) for p in (0, 0, 1)]
    await store.redis.delete(store.keys.queue)
    await store.redis.lpush(store.keys.queue, *[t.id for t in tasks])  # as 0.1 kept it: oldest at the right
    assert await queue.migrate() == 3
    assert (await queue.peek(5))[0] == [tasks[2].id, tasks[0].id, tasks[1].id]
    assert await queue.migrate() == 0 and not await store.redis.exists(f"{store.keys.queue}:list")


async def test_claims_and_submissions_in_one_round_trip_each(store: TaskStore, queue: TaskQueue):
    tasks = [await store.create(NewTask(STORED_GRAPH)) for _ in range(4)]
    await store.cancel(tasks[2].id)
    assert await queue.claim_ids([t.id for t in tasks] + ["nonexistent"], 30) == [True, True, False, True, False]
    await store.cancel(tasks[3].id)  # canceled while claimed: its submission is refused
    await store.redis.delete(f"{store.keys.prefix}:task:{tasks[1].id}")  # its record is gone
    outcomes = await queue.record_submissions([
        Submission(tasks[0].id, "b", "p0", 1, resolved_prompt={"9": {"class_type": "X", "inputs": {}}}),
        Submission(tasks[1].id, "b", "p1", 1),
        Submission(tasks[3].id, "b", "p3", 1),
        Submission(tasks[0].id, "b", "p0-again", 1),  # its claim was used up by the first
    ])
    assert outcomes[0] is None
    assert isinstance(outcomes[1], NotFound)
    assert isinstance(outcomes[2], InvalidTransition) and "canceled" in str(outcomes[2])
    assert isinstance(outcomes[3], InvalidTransition) and "claim" in str(outcomes[3])
    recorded = await store.get(tasks[0].id)
    assert (recorded.backend, recorded.prompt_id, recorded.attempts) == ("b", "p0", 1)
    assert recorded.prompt == {"9": {"class_type": "X", "inputs": {}}}
    assert await queue.task_of_prompt("p0") == tasks[0].id and await queue.task_of_prompt("p0-again") is None
    assert await store.redis.smembers(store.keys.active) == {tasks[0].id}
    assert await store.redis.zcard(store.keys.claims) == 0
