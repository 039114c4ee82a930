"""Late results of an attempt the task has moved on from (its backend was given up for lost and the task runs
elsewhere): the outcomes and the tracker change nothing, and the task store's compare-and-set on the prompt id is
what refuses. Against a real redis-server; no backend is asked."""
from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from comfyart.clock import now_ms
from comfyart.comfy import protocol
from comfyart.comfy.client import ComfyClient
from comfyart.config.fleet import PoolConfig
from comfyart.config.sections import TrackingConfig
from comfyart.errors import InvalidTransition, StoreUnavailable
from comfyart.files.outputs import OutputStore
from comfyart.models import Attempt, NewTask, TaskStatus
from comfyart.policy.attempts import AttemptEnd
from comfyart.pool.backend import Backend
from comfyart.pool.registry import Pool
from comfyart.store.stores import Stores
from comfyart.tracker.outcomes import Outcomes
from comfyart.tracker.prompts import PromptBook
from comfyart.tracker.tracker import Tracker
from tests.support.graphs import basic_graph
from tests.support.redis import impatient_client, stop_writes_once_queued

OLD, NEW = "4b1d6a2e-0000-4000-8000-0000000000a1", "4b1d6a2e-0000-4000-8000-0000000000b2"


async def test_results_of_an_attempt_given_up_for_lost_are_refused(tmp_path: Path, redis_client):
    stores = Stores.on(redis_client, "late")
    store, queue = stores.tasks, stores.queue
    task = await store.create(NewTask(basic_graph()))
    assert await queue.claim_id(task.id, 30)
    await queue.record_submission(task.id, backend="static:gone", prompt_id=OLD, attempts=1)
    async with aiohttp.ClientSession() as session:
        pool = Pool(config=PoolConfig(), providers=[], connect=lambda url: ComfyClient(session, url))
        gone, other = (Backend(id=f"static:{name}", kind="static", host="", url="http://127.0.0.1:9",
                               client=ComfyClient(session, "http://127.0.0.1:9")) for name in ("gone", "other"))
        book = PromptBook(on_change=pool.notify)
        config = TrackingConfig()
        outcomes = Outcomes(store=store, queue=queue, book=book, outputs=OutputStore(tmp_path / "outputs"),
                            config=config)
        tracker = Tracker(store=store, queue=queue, pool=pool, book=book, outcomes=outcomes, config=config,
                          client_id="late")
        old_state = book.open(gone, OLD, task.id, basic_graph())
        old_state.submitted = True

        await outcomes.backend_lost(gone, "unreachable for 20 s")  # what the pool does to a silent static backend
        moved = await store.get(task.id)
        assert moved.status is TaskStatus.PENDING and moved.prompt_id is None
        assert [(a.backend, a.prompt_id, a.outcome) for a in moved.history] == [("static:gone", OLD, "backend_lost")]
        assert OLD not in book and not gone.prompts

        assert await queue.claim_id(task.id, 30)  # the retry, on another backend
        await queue.record_submission(task.id, backend="static:other", prompt_id=NEW, attempts=2)
        book.open(other, NEW, task.id, basic_graph()).submitted = True

        # what the old backend still reports once it answers again: ignored (its start, as the book no longer
        # holds it; while it does, the store refuses it: test_a_start_of_an_attempt_ended_while_still_in_the_book)
        await tracker.handle(gone, protocol.ExecutionStart(OLD))
        await outcomes.failed(gone, OLD, old_state, "late failure")
        await outcomes.completed(gone, OLD, old_state, {})
        with pytest.raises(InvalidTransition):  # the store itself refuses an ended attempt's result
            await store.update(task.id, to=TaskStatus.COMPLETED, expect=("prompt_id", OLD))
        await outcomes.aclose()

    record = await store.get(task.id)
    assert record.status is TaskStatus.PENDING and record.prompt_id == NEW and record.backend == "static:other"
    assert record.attempts == 2 and record.outputs == [] and record.history == moved.history
    assert NEW in book and other.prompts == {NEW: task.id}


async def submitted_on(stores: Stores, backend: Backend, book: PromptBook, count: int) -> list[tuple[str, str]]:
    """``count`` tasks submitted to ``backend``, each in the book: (task id, prompt id) pairs."""
    pairs = []
    for number in range(count):
        task = await stores.tasks.create(NewTask(basic_graph(color=number)))
        prompt_id = f"4b1d6a2e-0000-4000-8000-00000000000{number}"
        assert await stores.queue.claim_id(task.id, 30)
        await stores.queue.record_submission(task.id, backend=backend.id, prompt_id=prompt_id, attempts=1)
        book.open(backend, prompt_id, task.id, basic_graph()).submitted = True
        pairs.append((task.id, prompt_id))
    return pairs


async def test_a_loss_cut_short_by_redis_leaves_the_rest_in_the_book_for_the_next_try(tmp_path: Path, redis_url):
    """Redis stops taking writes once the first of three attempts has ended (``CLIENT PAUSE ... WRITE``, and a
    client that gives up after 0.3 s): the two others stay in the book, their tasks still pointing at them, and
    the next try ends them; each task ends one attempt."""
    client, admin = impatient_client(redis_url), aioredis.from_url(redis_url, decode_responses=True)
    stores = Stores.on(client, "cut")
    async with aiohttp.ClientSession() as session:
        gone = Backend(id="static:gone", kind="static", host="", url="http://127.0.0.1:9",
                       client=ComfyClient(session, "http://127.0.0.1:9"))
        book = PromptBook()
        outcomes = Outcomes(store=stores.tasks, queue=stores.queue, book=book,
                            outputs=OutputStore(tmp_path / "outputs"), config=TrackingConfig())
        pairs = await submitted_on(stores, gone, book, 3)
        stopping = await stop_writes_once_queued(stores.queue, admin)
        try:
            with pytest.raises(StoreUnavailable):
                await outcomes.backend_lost(gone, "unreachable for 30 s")
            await stopping
            records = [await stores.tasks.get(task_id) for task_id, _ in pairs]  # reads still go through
        finally:
            await admin.execute_command("CLIENT", "UNPAUSE")
        assert records[0].status is TaskStatus.PENDING and records[0].prompt_id is None
        assert pairs[0][1] not in book
        for record, (_, prompt_id) in zip(records[1:], pairs[1:], strict=True):
            assert record.prompt_id == prompt_id and not record.history
            assert book.get(prompt_id) is not None and prompt_id in gone.prompts

        await outcomes.backend_lost(gone, "unreachable for 35 s")  # the next round's try
        for task_id, prompt_id in pairs:
            record = await stores.tasks.get(task_id)
            assert record.status is TaskStatus.PENDING and record.prompt_id is None
            assert [(a.prompt_id, a.outcome) for a in record.history] == [(prompt_id, "backend_lost")]
        assert len(book) == 0 and not gone.prompts
        assert await stores.queue.waiting() == 3
        await outcomes.aclose()
    await client.aclose()
    await admin.aclose()


async def test_an_attempt_ended_without_reaching_the_queue_is_queued_by_the_next_try(tmp_path: Path,
                                                                                     redis_client):
    """Redis failed between the two steps of a requeue: the task is pending, its attempt in its history, but not in
    the queue. The next loss of the backend, which still holds the entry, puts it there, without a second
    attempt."""
    stores = Stores.on(redis_client, "half")
    async with aiohttp.ClientSession() as session:
        gone = Backend(id="static:gone", kind="static", host="", url="http://127.0.0.1:9",
                       client=ComfyClient(session, "http://127.0.0.1:9"))
        book = PromptBook()
        outcomes = Outcomes(store=stores.tasks, queue=stores.queue, book=book,
                            outputs=OutputStore(tmp_path / "outputs"), config=TrackingConfig())
        [(task_id, prompt_id)] = await submitted_on(stores, gone, book, 1)
        task = await stores.tasks.get(task_id)
        attempt = Attempt(backend=gone.id, prompt_id=prompt_id, ended_ms=now_ms(), outcome="backend_lost",
                          error="backend static:gone was lost: unreachable for 30 s")
        await stores.tasks.update(task_id, to=TaskStatus.PENDING, expect=("prompt_id", prompt_id), backend=None,
                                  prompt_id=None, submitted_ms=None,
                                  history=[a.model_dump(exclude_none=True) for a in [*task.history, attempt]])
        assert await stores.queue.waiting() == 0  # the first step only: what a failure before the second leaves

        await outcomes.backend_lost(gone, "unreachable for 35 s")
        record = await stores.tasks.get(task_id)
        assert [(a.prompt_id, a.outcome) for a in record.history] == [(prompt_id, "backend_lost")]
        assert await stores.queue.waiting() == 1 and len(book) == 0
        await outcomes.aclose()


async def test_a_start_of_an_attempt_ended_while_still_in_the_book_is_refused(tmp_path: Path, redis_client):
    """While a lost backend's entries are requeued one by one, an entry is still in the book after its task moved
    on (requeued, then submitted again elsewhere): its backend's execution_start reaches the store, whose
    compare-and-set on the prompt id refuses it."""
    stores = Stores.on(redis_client, "start")
    async with aiohttp.ClientSession() as session:
        pool = Pool(config=PoolConfig(), providers=[], connect=lambda url: ComfyClient(session, url))
        gone = Backend(id="static:gone", kind="static", host="", url="http://127.0.0.1:9",
                       client=ComfyClient(session, "http://127.0.0.1:9"))
        book = PromptBook()
        config = TrackingConfig()
        outcomes = Outcomes(store=stores.tasks, queue=stores.queue, book=book,
                            outputs=OutputStore(tmp_path / "outputs"), config=config)
        tracker = Tracker(store=stores.tasks, queue=stores.queue, pool=pool, book=book, outcomes=outcomes,
                          config=config, client_id="start")
        [(task_id, old)] = await submitted_on(stores, gone, book, 1)
        await outcomes.requeue(task_id, AttemptEnd.BACKEND_LOST, "backend static:gone was lost", prompt_id=old)
        assert await stores.queue.claim_id(task_id, 30)
        await stores.queue.record_submission(task_id, backend="static:other", prompt_id=NEW, attempts=2)
        assert book.get(old) is not None  # not yet dropped

        await tracker.handle(gone, protocol.ExecutionStart(old))
        record = await stores.tasks.get(task_id)
        assert record.status is TaskStatus.PENDING and record.started_ms is None and record.prompt_id == NEW
        await outcomes.aclose()
