"""The daemon's leader loops (``daemon.build``'s, over the real Redis and an emulator) under LeaderTerms and a
leadership the test drives: lead, lose the term, lead again in the same process. The second term starts from
scratch and recovers what the first left: a prompt in flight is re-attached (it runs once), a claim left behind goes
back to the queue and is dispatched."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import httpx

from comfyart.bus import EventHub
from comfyart.cluster.terms import LeaderTerms
from comfyart.comfy.client import ComfyClient
from comfyart.config.fleet import PoolConfig, StaticBackendConfig
from comfyart.config.sections import SchedulerConfig, TrackingConfig
from comfyart.daemon import build
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
from tests.support.daemon import make_settings, static_backends
from tests.support.graphs import basic_graph
from tests.support.leadership import FENCE, FENCING, StandInLeadership


async def until(condition: Callable[[], Awaitable[bool]], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_a_second_term_in_the_same_process_recovers_what_the_first_left(tmp_path: Path, redis_url: str,
                                                                              emulator):
    emu = emulator("--node-seconds", "0.7")
    settings = make_settings(tmp_path, redis_url, static_backends=static_backends(emu))
    events = EventHub()
    stores = await Stores.open(settings, events)
    session = aiohttp.ClientSession()
    try:
        daemon = await build(settings, stores, session, events)
        core = daemon.core
        assert set(daemon.leader_loops) == {"pool", "inventories", "tracker", "dispatcher", "webhooks", "stats",
                                            "v2 retention", "pool publisher"}  # replicated: a redis.url
        assert {"leadership", "leader terms", "comfyui front door", "metrics", "pool mirror"} <= set(daemon.loops)
        fences: list[tuple[str, int | None]] = []

        def noting(name: str, loop: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
            async def run() -> None:
                fence = FENCE.get()
                fences.append((name, fence.epoch if fence is not None else None))
                await loop()
            return run

        leadership = StandInLeadership()
        # the writes Redis cannot fence ask this leadership, not the daemon's lease (never taken here)
        core.dispatcher.valid = core.tracker.valid = core.containers.valid = leadership.valid
        terms = LeaderTerms(leadership, {name: noting(name, loop) for name, loop in daemon.leader_loops.items()},
                            reset=core.reset, fence=FENCING)
        async with asyncio.TaskGroup() as tasks:
            running = tasks.create_task(terms.run(), name="terms")
            # term 1: a task is submitted and runs on the emulator
            leadership.grant(1)
            first = await stores.tasks.create(NewTask(basic_graph(color=1)))

            async def first_running() -> bool:
                return (await stores.tasks.get(first.id)).status is TaskStatus.RUNNING

            await until(first_running)
            prompt_id = (await stores.tasks.get(first.id)).prompt_id
            assert prompt_id in core.book and len(core.pool.backends) == 1
            leadership.revoke("epoch moved")

            async def idle() -> bool:
                return not terms.leading()

            await until(idle)
            assert len(core.book) == 0 and not core.pool.backends and not core.pool.ready.is_set()
            assert not core.tracker.recovered.is_set()
            # meanwhile: a claim of a leader that died before it recorded its submission
            second = await stores.tasks.create(NewTask(basic_graph(color=2)))
            assert await stores.queue.claim_ids([second.id], 30.0) == [True]
            assert await stores.queue.length() == 0
            await asyncio.sleep(0.3)
            assert (await stores.tasks.get(second.id)).status is TaskStatus.PENDING  # nobody leads: nothing moves
            # term 2: the pool is read again, the prompt in flight re-attached, the claim back in the queue
            leadership.grant(2)

            async def both_done() -> bool:
                records = [await stores.tasks.get(t.id) for t in (first, second)]
                return all(r.status is TaskStatus.COMPLETED for r in records)

            await until(both_done)
            done_first, done_second = await stores.tasks.get(first.id), await stores.tasks.get(second.id)
            assert done_first.prompt_id == prompt_id and done_first.attempts == 1  # re-attached, not resubmitted
            assert done_second.attempts == 1 and done_second.backend == "static:emu0"
            async with httpx.AsyncClient() as client:
                history = (await client.get(f"{emu.url}/history")).json()
            assert sorted(history) == sorted([prompt_id, done_second.prompt_id])  # each prompt ran once
            assert sorted(fences) == sorted([(name, epoch) for epoch in (1, 2) for name in daemon.leader_loops])
            await terms.stop()
            await running
        assert leadership.step_downs == [] and len(core.book) == 0
    finally:
        await daemon.core.containers.shutdown()
        await session.close()
        await stores.aclose()


async def test_the_dispatcher_claims_nothing_before_the_tracker_recovered(emulator, session, redis_client,
                                                                          tmp_path: Path):
    emu = emulator()
    stores = Stores.on(redis_client, "recovered")
    pool = Pool(config=PoolConfig(), providers=[], connect=lambda url: ComfyClient(session, url))
    backend = pool.add_static(StaticBackendConfig(name="one", url=emu.url), "config")
    await HealthChecks(pool, pool.config).probe(backend)
    pool.ready.set()
    book = PromptBook(on_change=pool.notify)
    outcomes = Outcomes(store=stores.tasks, queue=stores.queue, book=book, outputs=OutputStore(tmp_path / "out"),
                        config=TrackingConfig())
    recovered = asyncio.Event()
    dispatcher = Dispatcher(store=stores.tasks, queue=stores.queue, pool=pool, book=book, outcomes=outcomes,
                            resolver=Resolver(workflows=stores.workflows, tasks=stores.tasks,
                                              inputs=InputStore(tmp_path / "in"), outputs=OutputStore(tmp_path / "o")),
                            config=SchedulerConfig(), client_id="recovered", recovered=recovered)
    task = await stores.tasks.create(NewTask(basic_graph()))
    async with asyncio.TaskGroup() as tasks:
        loop = tasks.create_task(dispatcher.run(), name="dispatcher")
        await asyncio.sleep(0.5)
        assert await stores.queue.length() == 1 and len(book) == 0  # the pool is ready, but recovery is not done
        recovered.set()

        async def submitted() -> bool:
            return (await stores.tasks.get(task.id)).backend == "static:one"

        await until(submitted, 10)
        loop.cancel()
    await outcomes.aclose()
