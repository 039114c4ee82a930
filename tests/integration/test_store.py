"""The task store and queue on a real redis-server."""
from __future__ import annotations

import asyncio

import pytest

from comfyart.config.fleet import StaticBackendConfig
from comfyart.errors import InvalidTransition, NotFound
from comfyart.models import NewTask, TaskStatus
from comfyart.store.keys import Keys
from comfyart.store.pool import PoolStore, ScaleOverride
from comfyart.store.queue import Submission, TaskQueue
from comfyart.store.stores import Stores
from comfyart.store.tasks import TaskStore

GRAPH = {"1": {"class_type": "EmptyImage", "inputs": {}}}


@pytest.fixture
def stores(redis_client) -> Stores:
    return Stores.on(redis_client, "test")


@pytest.fixture
def store(stores: Stores) -> TaskStore:
    return stores.tasks


@pytest.fixture
def queue(stores: Stores) -> TaskQueue:
    return stores.queue


async def test_create_get_and_the_queue_order(store: TaskStore, queue: TaskQueue):
    first, second = await store.create(NewTask(GRAPH)), await store.create(NewTask(GRAPH))
    assert first.id < second.id  # ULIDs sort by creation
    fetched = await store.get(first.id)
    assert fetched.status == TaskStatus.PENDING and fetched.prompt == GRAPH and fetched.attempts == 0
    assert await queue.length() == 2
    assert await queue.claim(0.1, 30) == first.id  # oldest first
    assert await queue.claim(0.1, 30) == second.id
    assert await queue.claim(0.1, 30) is None
    assert set(await store.redis.zrange(store.keys.claims, 0, -1)) == {first.id, second.id}


async def test_list_newest_first_with_filter_and_paging(store: TaskStore, queue: TaskQueue):
    ids = [(await store.create(NewTask(GRAPH))).id for _ in range(5)]
    await store.update(ids[1], to=TaskStatus.FAILED, error="x")
    listed = [t.id for t in await store.page(limit=3)]
    assert listed == ids[::-1][:3]
    assert [t.id for t in await store.page(limit=3, offset=3)] == ids[::-1][3:]
    assert [t.id for t in await store.page(status=TaskStatus.FAILED)] == [ids[1]]
    assert await store.count(TaskStatus.PENDING) == 4 and await store.count() == 5


async def test_a_final_status_is_never_left_and_never_reached_twice(store: TaskStore, queue: TaskQueue):
    task = await store.create(NewTask(GRAPH))
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
    task = await store.create(NewTask(GRAPH))
    results = await asyncio.gather(*(store.update(task.id, to=TaskStatus.COMPLETED) for _ in range(10)),
                                   return_exceptions=True)
    assert sum(r == TaskStatus.PENDING for r in results) == 1
    assert sum(isinstance(r, InvalidTransition) for r in results) == 9


async def test_transitions_of_one_tick_share_a_round_trip_and_keep_their_own_outcomes(store: TaskStore):
    a, b, c = [await store.create(NewTask(GRAPH)) for _ in range(3)]
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


async def test_submission_bookkeeping_and_requeue(store: TaskStore, queue: TaskQueue):
    task = await store.create(NewTask(GRAPH))
    await queue.claim(0.1, 30)
    await queue.record_submission(task.id, backend="b1", prompt_id="p1", attempts=1)
    assert await queue.task_of_prompt("p1") == task.id
    assert [t.id for t in await store.active_tasks()] == [task.id]
    assert await store.redis.zcard(store.keys.claims) == 0
    await store.update(task.id, to=TaskStatus.PENDING, backend=None, prompt_id=None)
    await queue.requeue(task.id)
    other = await store.create(NewTask(GRAPH))
    assert await queue.claim(0.1, 30) == task.id  # the requeued task goes before newer ones
    assert await queue.claim(0.1, 30) == other.id
    record = await store.get(task.id)
    assert record.backend is None and record.prompt_id is None and record.attempts == 1


async def test_claimed_but_unsubmitted_tasks_return_to_the_queue(store: TaskStore, queue: TaskQueue):
    first, second = await store.create(NewTask(GRAPH)), await store.create(NewTask(GRAPH))
    await queue.claim(0.1, 30)
    await queue.claim(0.1, 30)
    assert await queue.recover_claimed() == 2
    assert await queue.claim(0.1, 30) == first.id and await queue.claim(0.1, 30) == second.id


async def test_an_expired_claim_returns_to_the_head_of_the_queue_and_its_late_submission_is_refused(
        store: TaskStore, queue: TaskQueue):
    first, second = await store.create(NewTask(GRAPH)), await store.create(NewTask(GRAPH))
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
    tasks = [await store.create(NewTask(GRAPH)) for _ in range(6)]

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
    task = await store.create(NewTask(GRAPH))
    assert await queue.claim(0.1, 30) == task.id
    assert await store.cancel(task.id) == TaskStatus.PENDING
    with pytest.raises(InvalidTransition, match="canceled"):
        await queue.record_submission(task.id, backend="b", prompt_id="p", attempts=1)
    with pytest.raises(InvalidTransition):
        await store.cancel(task.id)  # a final task cannot be canceled again
    assert await queue.waiting() == 0


async def test_an_update_can_require_a_field_to_hold_a_value(store: TaskStore, queue: TaskQueue):
    task = await store.create(NewTask(GRAPH))
    await queue.claim(0.1, 30)
    await queue.record_submission(task.id, backend="b", prompt_id="p1", attempts=1)
    with pytest.raises(InvalidTransition):
        await store.update(task.id, to=TaskStatus.PENDING, expect=("prompt_id", "p0"), prompt_id=None)
    await store.update(task.id, to=TaskStatus.PENDING, expect=("prompt_id", "p1"), prompt_id=None)
    with pytest.raises(InvalidTransition):  # the same attempt cannot be ended twice
        await store.update(task.id, to=TaskStatus.PENDING, expect=("prompt_id", "p1"), prompt_id=None)
    assert (await store.get(task.id)).prompt_id is None


async def test_pool_store_keeps_static_backends_scale_overrides_and_the_client_id(redis_client):
    pools = PoolStore(redis_client, Keys("test"))
    first_id = await pools.client_id()
    assert first_id.startswith("comfyart-") and await PoolStore(redis_client, Keys("test")).client_id() == first_id
    await pools.add_static(StaticBackendConfig(name="gpu-box", url="http://127.0.0.1:9", tags=["video"], weight=2))
    assert await pools.static_backends() == {"gpu-box": StaticBackendConfig(name="gpu-box", url="http://127.0.0.1:9",
                                                                            tags=["video"], weight=2)}
    await redis_client.hset("test:static-backends", "old", "http://127.0.0.1:10")  # as 0.1 wrote it
    assert (await pools.static_backends())["old"] == StaticBackendConfig(name="old", url="http://127.0.0.1:10")
    assert await pools.remove_static("gpu-box") and not await pools.remove_static("gpu-box")
    assert await pools.scale_override() == ScaleOverride()
    await pools.set_scale_override(ScaleOverride(min_containers=2, target=3))
    assert await pools.scale_override() == ScaleOverride(min_containers=2, target=3)
    await pools.set_scale_override(ScaleOverride())
    assert await pools.scale_override() == ScaleOverride()


async def test_priorities_strict_between_levels_fifo_within_and_kept_on_requeue(store: TaskStore, queue: TaskQueue):
    low = await store.create(NewTask(GRAPH, priority=-1))
    normal = [await store.create(NewTask(GRAPH)) for _ in range(2)]
    high = await store.create(NewTask(GRAPH, priority=1))
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
    low = await store.create(NewTask(GRAPH, priority=-1))
    newer = await store.create(NewTask(GRAPH))
    assert (await queue.peek(2))[0] == [newer.id, low.id]
    # 61 s later (as if): the low task has waited one level's worth, and beats a new normal task
    await store.redis.hset(f"ageing:task:{low.id}", "created_ms", low.created_ms - 61_000)
    await queue.requeue(low.id)
    assert (await queue.peek(2))[0] == [low.id, newer.id]


async def test_expired_claims_return_at_their_place_by_priority(store: TaskStore, queue: TaskQueue):
    normal = await store.create(NewTask(GRAPH))
    high = await store.create(NewTask(GRAPH, priority=1))
    assert await queue.claim_id(high.id, 0.05)
    await asyncio.sleep(0.1)
    assert await queue.return_expired_claims() == [high.id]
    assert (await queue.peek(2))[0] == [high.id, normal.id]


async def test_a_list_queue_from_the_previous_version_is_migrated(store: TaskStore, queue: TaskQueue):
    tasks = [await store.create(NewTask(GRAPH, priority=p)) for p in (0, 0, 1)]
    await store.redis.delete(store.keys.queue)
    await store.redis.lpush(store.keys.queue, *[t.id for t in tasks])  # as 0.1 kept it: oldest at the right
    assert await queue.migrate() == 3
    assert (await queue.peek(5))[0] == [tasks[2].id, tasks[0].id, tasks[1].id]
    assert await queue.migrate() == 0 and not await store.redis.exists(f"{store.keys.queue}:list")


async def test_requirements_are_stored_and_read_back_in_bulk(store: TaskStore, queue: TaskQueue):
    task = await store.create(NewTask(GRAPH, requires=["video", "sdxl", "video"], vram_mb=12000))
    records = await store.get_many([task.id, "01NOSUCHTASK0000000000000"])
    assert records[1] is None
    assert records[0].requires == ["sdxl", "video"] and records[0].vram_mb == 12000


async def test_claims_and_submissions_in_one_round_trip_each(store: TaskStore, queue: TaskQueue):
    tasks = [await store.create(NewTask(GRAPH)) for _ in range(4)]
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


async def test_progress_is_written_only_to_the_attempt_it_belongs_to(store: TaskStore, queue: TaskQueue):
    running, requeued, done = [await store.create(NewTask(GRAPH)) for _ in range(3)]
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
