"""One ``Dispatcher.round`` over the real Redis and an emulator, without a daemon around it: what one round claims
and submits."""
from __future__ import annotations

import asyncio
from pathlib import Path

from comfyart.comfy.client import ComfyClient
from comfyart.config.fleet import PoolConfig, StaticBackendConfig
from comfyart.config.sections import SchedulerConfig, TrackingConfig
from comfyart.dispatcher import Dispatcher
from comfyart.files.inputs import InputStore
from comfyart.files.outputs import OutputStore
from comfyart.models import NewTask, TaskStatus
from comfyart.pool.health import HealthChecks
from comfyart.pool.registry import Pool
from comfyart.store.stores import Stores
from comfyart.tracker.outcomes import Outcomes
from comfyart.tracker.prompts import PromptBook
from comfyart.workflows.resolve import Resolver
from tests.support.graphs import basic_graph


async def test_a_dispatch_round_claims_and_submits_one_prompt_per_free_slot(emulator, session, redis_client,
                                                                            tmp_path: Path):
    backend_emulator = emulator("--node-seconds", "0.5")
    stores = Stores.on(redis_client, "round")
    pool = Pool(config=PoolConfig(), providers=[], connect=lambda url: ComfyClient(session, url))
    backend = pool.add_static(StaticBackendConfig(name="one", url=backend_emulator.url), "config")
    await HealthChecks(pool, pool.config).probe(backend)
    book = PromptBook(on_change=pool.notify)
    outcomes = Outcomes(store=stores.tasks, queue=stores.queue, book=book, outputs=OutputStore(tmp_path / "out"),
                        config=TrackingConfig())
    dispatcher = Dispatcher(store=stores.tasks, queue=stores.queue, pool=pool, book=book, outcomes=outcomes,
                            resolver=Resolver(workflows=stores.workflows, tasks=stores.tasks,
                                              inputs=InputStore(tmp_path / "in"), outputs=OutputStore(tmp_path / "o")),
                            config=SchedulerConfig(prefetch=1), client_id="round")
    tasks = [await stores.tasks.create(NewTask(basic_graph(color=i))) for i in range(4)]
    async with asyncio.TaskGroup() as submissions:
        assert await dispatcher.round(submissions)  # one backend, prefetch 1: two slots
    assert len(book) == 2 and len(backend.prompts) == 2
    assert await stores.queue.length() == 2
    submitted = [await stores.tasks.get(t.id) for t in tasks[:2]]
    assert [(t.backend, t.attempts) for t in submitted] == [("static:one", 1)] * 2
    queue = await backend.client.queue()
    on_backend = {item[1] for key in ("queue_running", "queue_pending") for item in queue[key]}
    assert on_backend == set(backend.prompts)  # the prompt ids comfyart minted, on the backend
    async with asyncio.TaskGroup() as submissions:
        assert not await dispatcher.round(submissions)  # no slot free: nothing claimed
    assert await stores.queue.length() == 2
    waiting = await stores.tasks.get_many([t.id for t in tasks[2:]])
    assert [t.status for t in waiting if t is not None] == [TaskStatus.PENDING] * 2
    assert [t.backend for t in waiting if t is not None] == [None, None]
    await outcomes.aclose()
