"""The task store and queue on a real redis-server."""
from __future__ import annotations

import asyncio

import pytest

from comfyart.errors import InvalidTransition, NotFound
from comfyart.models import TaskStatus
from comfyart.store import TaskStore

GRAPH = {"1": {"class_type": "EmptyImage", "inputs": {}}}


@pytest.fixture
def store(redis_client) -> TaskStore:
    return TaskStore(redis_client, "test")


async def test_create_get_and_the_queue_order(store: TaskStore):
    first, second = await store.create(GRAPH), await store.create(GRAPH)
    assert first.id < second.id  # ULIDs sort by creation
    fetched = await store.get(first.id)
    assert fetched.status == TaskStatus.PENDING and fetched.prompt == GRAPH and fetched.attempts == 0
    assert await store.queue_length() == 2
    assert await store.claim(0.1) == first.id  # oldest first
    assert await store.claim(0.1) == second.id
    assert await store.claim(0.1) is None
    assert await store.redis.lrange(store.claimed_key, 0, -1) == [second.id, first.id]


async def test_list_newest_first_with_filter_and_paging(store: TaskStore):
    ids = [(await store.create(GRAPH)).id for _ in range(5)]
    await store.update(ids[1], to=TaskStatus.FAILED, error="x")
    listed = [t.id for t in await store.list(limit=3)]
    assert listed == ids[::-1][:3]
    assert [t.id for t in await store.list(limit=3, offset=3)] == ids[::-1][3:]
    assert [t.id for t in await store.list(status=TaskStatus.FAILED)] == [ids[1]]
    assert await store.count(TaskStatus.PENDING) == 4 and await store.count() == 5


async def test_a_final_status_is_never_left_and_never_reached_twice(store: TaskStore):
    task = await store.create(GRAPH)
    assert await store.update(task.id, to=TaskStatus.RUNNING) == TaskStatus.PENDING
    await store.update(task.id, to=TaskStatus.COMPLETED, progress=1.0)
    with pytest.raises(InvalidTransition):
        await store.update(task.id, to=TaskStatus.COMPLETED)
    with pytest.raises(InvalidTransition):
        await store.update(task.id, to=TaskStatus.RUNNING)
    with pytest.raises(InvalidTransition):
        await store.update(task.id, progress=0.5)  # no field writes on a final task either
    assert (await store.get(task.id)).progress == 1.0
    assert await store.count(TaskStatus.COMPLETED) == 1 and await store.count(TaskStatus.RUNNING) == 0


async def test_concurrent_completions_only_one_wins(store: TaskStore):
    task = await store.create(GRAPH)
    results = await asyncio.gather(*(store.update(task.id, to=TaskStatus.COMPLETED) for _ in range(10)),
                                   return_exceptions=True)
    assert sum(r == TaskStatus.PENDING for r in results) == 1
    assert sum(isinstance(r, InvalidTransition) for r in results) == 9


async def test_unknown_task(store: TaskStore):
    with pytest.raises(NotFound):
        await store.get("nope")
    with pytest.raises(NotFound):
        await store.update("nope", to=TaskStatus.RUNNING)


async def test_submission_bookkeeping_and_requeue(store: TaskStore):
    task = await store.create(GRAPH)
    await store.claim(0.1)
    await store.record_submission(task.id, backend="b1", prompt_id="p1", attempts=1)
    assert await store.task_for_prompt("p1") == task.id
    assert [t.id for t in await store.active_tasks()] == [task.id]
    assert await store.redis.llen(store.claimed_key) == 0
    await store.update(task.id, to=TaskStatus.PENDING, backend=None, prompt_id=None)
    await store.requeue_front(task.id)
    other = await store.create(GRAPH)
    assert await store.claim(0.1) == task.id  # the requeued task goes before newer ones
    assert await store.claim(0.1) == other.id
    record = await store.get(task.id)
    assert record.backend is None and record.prompt_id is None and record.attempts == 1


async def test_claimed_but_unsubmitted_tasks_return_to_the_queue(store: TaskStore):
    first, second = await store.create(GRAPH), await store.create(GRAPH)
    await store.claim(0.1)
    await store.claim(0.1)
    assert await store.recover_claimed() == 2
    assert await store.claim(0.1) == first.id and await store.claim(0.1) == second.id
