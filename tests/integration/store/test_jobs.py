"""v2 job indexes (store.jobs) on a real redis-server: pages newest first through cursors, label filters read from
their index, a key's jobs kept apart, the queue position, a cancel asked."""
from __future__ import annotations

from comfyart.models import NewTask, Task, TaskStatus
from comfyart.store.jobs import JobIndex
from comfyart.store.tasks import TaskStore
from tests.support.graphs import basic_graph


async def submit(store: TaskStore, owner: str | None = None, labels: dict[str, str] | None = None) -> Task:
    jobs = JobIndex(store)
    new = NewTask(prompt=basic_graph(), owner=owner, v2=True, labels=labels)

    async def index(pipe, task_id, created_ms):
        jobs.index_in(pipe, task_id, created_ms, owner, labels or {})

    return await store.create(new, bind=index)


async def test_pages_run_newest_first_through_cursors_and_keys_are_kept_apart(store):
    jobs = JobIndex(store)
    mine = [await submit(store, "alice") for _ in range(7)]
    theirs = await submit(store, "carol")
    seen, after = [], None
    while True:
        page, more = await jobs.page(owner="alice", filters={}, after=after, limit=3)
        seen += [t.id for t in page]
        if not more:
            break
        after = (page[-1].created_ms, page[-1].id)
    assert seen == [t.id for t in reversed(mine)]
    everyone, more = await jobs.page(owner=None, filters={}, after=None, limit=100)
    assert [t.id for t in everyone] == [theirs.id, *seen] and not more


async def test_a_filtered_page_reads_the_first_labels_index_and_checks_the_others(store):
    jobs = JobIndex(store)
    red = await submit(store, "alice", {"color": "red", "size": "s"})
    await submit(store, "alice", {"color": "red", "size": "l"})
    await submit(store, "alice", {"color": "blue"})
    await submit(store, "carol", {"color": "red", "size": "s"})
    page, more = await jobs.page(owner="alice", filters={"color": "red", "size": "s"}, after=None, limit=10)
    assert [t.id for t in page] == [red.id] and not more and page[0].labels == {"color": "red", "size": "s"}
    assert len((await jobs.page(owner=None, filters={"color": "red"}, after=None, limit=10))[0]) == 3
    assert await store.redis.zcard(jobs.label("o:alice", "color", "red")) == 2  # the index holds only those


async def test_the_queue_position_is_the_rank_in_comfyarts_queue(store, queue):
    jobs = JobIndex(store)
    first, second = await submit(store), await submit(store)
    assert [await jobs.queue_position(t.id) for t in (first, second)] == [1, 2]
    assert await queue.claim_id(first.id, 30)
    assert [await jobs.queue_position(t.id) for t in (first, second)] == [None, 1]


async def test_a_cancel_asked_is_kept_only_while_the_job_runs(store):
    jobs = JobIndex(store)
    task = await submit(store)
    await store.update(task.id, to=TaskStatus.RUNNING, started_ms=5)
    await jobs.ask_cancel(task.id, 1234)
    assert (await store.get(task.id)).cancel_asked_ms == 1234
