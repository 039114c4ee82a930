"""A lost container (pool.containers ``lose``) whose prompts cannot all be requeued, Redis failing half-way: it
stays in the pool, unhealthy, holding the prompts not yet requeued, and the next round's loss requeues them. Against
a real redis-server; the container is a backend record: no provider is asked."""
from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio as aioredis

from comfyart.comfy.client import ComfyClient
from comfyart.config.fleet import PoolConfig
from comfyart.config.sections import TrackingConfig
from comfyart.errors import StoreUnavailable
from comfyart.files.outputs import OutputStore
from comfyart.models import BackendState, NewTask, TaskStatus
from comfyart.pool.backend import Backend
from comfyart.pool.containers import Containers
from comfyart.pool.registry import Pool
from comfyart.store.stores import Stores
from comfyart.tracker.outcomes import Outcomes
from comfyart.tracker.prompts import PromptBook
from tests.support.graphs import basic_graph
from tests.support.redis import impatient_client, stop_writes_once_queued


async def test_a_loss_cut_short_by_redis_is_finished_by_the_next_one(tmp_path: Path, redis_url, session):
    client, admin = impatient_client(redis_url), aioredis.from_url(redis_url, decode_responses=True)
    stores = Stores.on(client, "dead")
    pool = Pool(config=PoolConfig(), providers=[], connect=lambda url: ComfyClient(session, url))
    book = PromptBook(on_change=pool.notify)
    outcomes = Outcomes(store=stores.tasks, queue=stores.queue, book=book,
                        outputs=OutputStore(tmp_path / "outputs"), config=TrackingConfig())
    containers = Containers(pool, on_lost=outcomes.backend_lost)
    dead = Backend(id="process:dead", kind="process", host="local", url="http://127.0.0.1:9",
                   client=ComfyClient(session, "http://127.0.0.1:9"), state=BackendState.HEALTHY)
    pool.backends[dead.id] = dead
    prompts = {"dead-0", "dead-1"}
    ids = []
    for prompt_id in sorted(prompts):
        task = await stores.tasks.create(NewTask(basic_graph()))
        assert await stores.queue.claim_id(task.id, 30)
        await stores.queue.record_submission(task.id, backend=dead.id, prompt_id=prompt_id, attempts=1)
        book.open(dead, prompt_id, task.id, basic_graph()).submitted = True
        ids.append(task.id)

    stopping = await stop_writes_once_queued(stores.queue, admin)
    try:
        with pytest.raises(StoreUnavailable):
            await containers.lose(dead, "exited with code 137", replace=True)
        await stopping
    finally:
        await admin.execute_command("CLIENT", "UNPAUSE")
    assert pool.backends[dead.id] is dead and dead.state is BackendState.UNHEALTHY  # chosen for nothing
    assert set(dead.prompts) == {"dead-1"} and "dead-1" in book
    assert pool.counters["lost"] == 0 and pool.replacements == 0  # counted once it is gone

    await containers.lose(dead, "exited with code 137", replace=True)  # the next round finds it dead again
    assert dead.id not in pool.backends and not dead.prompts and len(book) == 0
    assert pool.counters["lost"] == 1 and pool.replacements == 1
    for task_id in ids:
        record = await stores.tasks.get(task_id)
        assert record.status is TaskStatus.PENDING and len(record.history) == 1
    assert await stores.queue.waiting() == 2
    await outcomes.aclose()
    await client.aclose()
    await admin.aclose()
