"""Late results of an attempt the task has moved on from (its backend was given up for lost and the task runs
elsewhere): the outcomes and the tracker change nothing, and the task store's compare-and-set on the prompt id is
what refuses. Against a real redis-server; no backend is asked."""
from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from comfyart.comfy import protocol
from comfyart.comfy.client import ComfyClient
from comfyart.config.fleet import PoolConfig
from comfyart.config.sections import TrackingConfig
from comfyart.errors import InvalidTransition
from comfyart.files.outputs import OutputStore
from comfyart.models import NewTask, TaskStatus
from comfyart.pool.backend import Backend
from comfyart.pool.registry import Pool
from comfyart.store.stores import Stores
from comfyart.tracker.outcomes import Outcomes
from comfyart.tracker.prompts import PromptBook
from comfyart.tracker.tracker import Tracker
from tests.support.graphs import basic_graph

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

        # what the old backend still reports once it answers again: ignored
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
