"""The task store (store.tasks) on a real redis-server: records, listing, transitions that never leave a final
status, batched transitions, progress."""
from __future__ import annotations

import asyncio

import pytest

from comfyart.errors import InvalidTransition, NotFound
from comfyart.models import NewTask, TaskStatus
from comfyart.store.queue import TaskQueue
from comfyart.store.tasks import TaskStore
from tests.support.graphs import STORED_GRAPH


async def test_list_newest_first_with_filter_and_paging(store: TaskStore, queue: TaskQueue):
    ids = [(await store.create(NewTask(STORED_GRAPH))).id for _ in range(5)]
    await store.update(ids[1], to=TaskStatus.FAILED, error="x")
    listed = [t.id for t in await store.page(limit=3)]
    assert listed == ids[::-1][:3]
    assert [t.id for t in await store.page(limit=3, offset=3)] == ids[::-1][3:]
    assert [t.id for t in await store.page(status=TaskStatus.FAILED)] == [ids[1]]
    assert await store.count(TaskStatus.PENDING) == 4 and await store.count() == 5


async def test_a_final_status_is_never_left_and_never_reached_twice(store: TaskStore, queue: TaskQueue):
    task = await store.create(NewTask(STORED_GRAPH))
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


async def test_concurrent_completions_only_one_wins(store: TaskStore, queue: TaskQueue):
    task = await store.create(NewTask(STORED_GRAPH))
    results = await asyncio.gather(*(store.update(task.id, to=TaskStatus.COMPLETED) for _ in range(10)),
                                   return_exceptions=True)
    assert sum(r == TaskStatus.PENDING for r in results) == 1
    assert sum(isinstance(r, InvalidTransition) for r in results) == 9


async def test_transitions_of_one_tick_share_a_round_trip_and_keep_their_own_outcomes(store: TaskStore):
    a, b, c = [await store.create(NewTask(STORED_GRAPH)) for _ in range(3)]
    await store.update(c.id, node="7")
    events = store.events.subscribe()  # closed below, once read
    batches_before = store.transitions.batches
    results = await asyncio.gather(
        store.update(a.id, to=TaskStatus.RUNNING, started_ms=1),  # then, in the same script, completed
        store.update(a.id, to=TaskStatus.COMPLETED, progress=1.0),
        store.update("nope", to=TaskStatus.RUNNING),
        store.update(b.id, to=TaskStatus.FAILED, expect=("prompt_id", "p9"), error="x"),  # b has no prompt p9
        store.update(c.id, node=None, progress=0.5),  # a field deleted, one written, status kept
        return_exceptions=True)
    assert store.transitions.batches == batches_before + 1
    assert results[0] == TaskStatus.PENDING and results[1] == TaskStatus.RUNNING
    assert isinstance(results[2], NotFound) and isinstance(results[3], InvalidTransition)
    assert results[4] == TaskStatus.PENDING
    done, untouched, written = await store.get(a.id), await store.get(b.id), await store.get(c.id)
    assert done.status is TaskStatus.COMPLETED and done.started_ms == 1 and done.progress == 1.0
    assert untouched.status is TaskStatus.PENDING and untouched.error is None
    assert written.node is None and written.progress == 0.5 and written.status is TaskStatus.PENDING
    assert await store.redis.zscore(f"{store.keys.prefix}:tasks:completed", a.id) is not None
    assert await store.redis.zscore(f"{store.keys.prefix}:tasks:running", a.id) is None
    published = []
    while (event := await events.get(0.01)) is not None:
        published.append(event)
    events.close()
    assert [(e["id"], e["status"]) for e in published] == [(a.id, "running"), (a.id, "completed"),
                                                         (c.id, "pending")]


async def test_unknown_task(store: TaskStore, queue: TaskQueue):
    with pytest.raises(NotFound):
        await store.get("nope")
    with pytest.raises(NotFound):
        await store.update("nope", to=TaskStatus.RUNNING)


async def test_an_update_can_require_a_field_to_hold_a_value(store: TaskStore, queue: TaskQueue):
    task = await store.create(NewTask(STORED_GRAPH))
    await queue.claim(0.1, 30)
    await queue.record_submission(task.id, backend="b", prompt_id="p1", attempts=1)
    with pytest.raises(InvalidTransition):
        await store.update(task.id, to=TaskStatus.PENDING, expect=("prompt_id", "p0"), prompt_id=None)
    await store.update(task.id, to=TaskStatus.PENDING, expect=("prompt_id", "p1"), prompt_id=None)
    with pytest.raises(InvalidTransition):  # the same attempt cannot be ended twice
        await store.update(task.id, to=TaskStatus.PENDING, expect=("prompt_id", "p1"), prompt_id=None)
    assert (await store.get(task.id)).prompt_id is None


async def test_requirements_are_stored_and_read_back_in_bulk(store: TaskStore, queue: TaskQueue):
    task = await store.create(NewTask(STORED_GRAPH, requires=["video", "sdxl", "video"], vram_mb=12000))
    records = await store.get_many([task.id, "01NOSUCHTASK0000000000000"])
    assert records[1] is None
    assert records[0].requires == ["sdxl", "video"] and records[0].vram_mb == 12000


async def test_progress_is_written_only_to_the_attempt_it_belongs_to(store: TaskStore, queue: TaskQueue):
    running, requeued, done = [await store.create(NewTask(STORED_GRAPH)) for _ in range(3)]
    for task, prompt_id in ((running, "p-run"), (requeued, "p-old"), (done, "p-done")):
        await queue.claim_id(task.id, 30)
        await queue.record_submission(task.id, backend="b", prompt_id=prompt_id, attempts=1)
    await store.update(running.id, to=TaskStatus.RUNNING)
    await store.update(requeued.id, to=TaskStatus.PENDING, prompt_id=None)  # its attempt ended
    await store.update(done.id, to=TaskStatus.COMPLETED, progress=1.0)
    await store.write_progress([(running.id, "p-run", {"progress": 0.5, "node": "3", "node_step": 4}),
                                (requeued.id, "p-old", {"progress": 0.5}),
                                (done.id, "p-done", {"progress": 0.5, "node": "3"})])
    after = await store.get(running.id)
    assert (after.progress, after.node, after.node_step) == (0.5, "3", 4)
    assert (await store.get(requeued.id)).progress == 0.0
    finished = await store.get(done.id)
    assert finished.progress == 1.0 and finished.node is None
    await store.write_progress([(running.id, "p-run", {"node": None, "node_step": None})])  # None deletes
    cleared = await store.get(running.id)
    assert cleared.node is None and cleared.node_step is None and cleared.progress == 0.5
    await store.write_progress([])  # nothing to write: no round trip, no error
