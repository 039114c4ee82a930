"""The writes Redis cannot fence are checked against the leadership right before they happen (issue 24): a term
that is over locally (``Leadership.valid()`` false) sends no POST /prompt, starts or removes no backend process, and
opens no backend socket under the shared client id; the error (``Fenced``) ends the term. Real redis-server,
emulators and local processes."""
from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import httpx
import pytest
import redis.asyncio as aioredis

from comfyart.bus import EventHub
from comfyart.cluster.terms import LeaderTerms
from comfyart.comfy.client import ComfyClient
from comfyart.config.fleet import PoolConfig, ProcessConfig
from comfyart.config.sections import TrackingConfig
from comfyart.daemon import build
from comfyart.errors import Fenced
from comfyart.files.outputs import OutputStore
from comfyart.models import NewTask
from comfyart.policy.placement import Placement
from comfyart.pool.containers import Containers
from comfyart.pool.providers.process import HOST_NAME, ProcessProvider
from comfyart.pool.registry import Pool
from comfyart.store.stores import Stores
from comfyart.tracker.outcomes import Outcomes
from comfyart.tracker.prompts import PromptBook
from tests.support.daemon import make_settings, static_backends
from tests.support.graphs import basic_graph
from tests.support.leadership import FENCING, StandInLeadership
from tests.support.ports import free_port_range

EMULATOR = ["{python}", "-m", "comfyart.emulator", "--host", "{address}", "--port", "{port}"]


async def until(condition: Callable[[], Awaitable[bool] | bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        met = condition()
        if not isinstance(met, bool):
            met = await met
        if met:
            return
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("refusing", ["dispatcher", "tracker"])
async def test_a_term_over_locally_posts_no_prompt_and_opens_no_socket(tmp_path: Path, redis_url: str, emulator,
                                                                      refusing: str):
    emu = emulator()
    settings = make_settings(tmp_path, redis_url, static_backends=static_backends(emu))
    events = EventHub()
    stores = await Stores.open(settings, events)
    session = aiohttp.ClientSession()
    try:
        daemon = await build(settings, stores, session, events)
        core = daemon.core
        leadership = StandInLeadership()
        core.dispatcher.valid = core.tracker.valid = core.containers.valid = leadership.valid
        getattr(core, refusing).valid = lambda: False  # that loop's view: the term is over
        terms = LeaderTerms(leadership, daemon.leader_loops, reset=core.reset, fence=FENCING)
        # a task for the dispatcher to refuse; none for the tracker's case: its socket alone ends the term
        task = await stores.tasks.create(NewTask(basic_graph())) if refusing == "dispatcher" else None
        running = asyncio.get_running_loop().create_task(terms.run())
        leadership.grant(1)
        await until(lambda: leadership.step_downs == ["fenced"])
        await terms.stop()
        await running
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"{emu.url}/history")).json() == {}
            queue = (await client.get(f"{emu.url}/queue")).json()
        assert queue["queue_running"] == [] and queue["queue_pending"] == []
        if task is not None:
            assert (await stores.tasks.get(task.id)).status.value in ("pending", "queued")
    finally:
        await daemon.core.containers.shutdown()
        await session.close()
        await stores.aclose()


async def test_a_term_over_locally_starts_and_removes_no_process(tmp_path: Path, redis_url: str, session):
    ports = free_port_range(2)
    provider = ProcessProvider(ProcessConfig(command=[*EMULATOR, "--base-dir", str(tmp_path / "emu")], ports=ports,
                                             startup_timeout=20), data_dir=tmp_path / "data")
    pool = Pool(config=PoolConfig(), providers=[provider], connect=lambda url: ComfyClient(session, url))
    stores = Stores.on(aioredis.from_url(redis_url, decode_responses=True), "guard")
    outcomes = Outcomes(store=stores.tasks, queue=stores.queue, book=PromptBook(on_change=pool.notify),
                        outputs=OutputStore(tmp_path / "outputs"), config=TrackingConfig())
    leading = False
    containers = Containers(pool, on_lost=outcomes.backend_lost, valid=lambda: leading)
    with pytest.raises(ExceptionGroup) as refused:
        async with asyncio.TaskGroup() as tasks:
            assert containers.start(1, tasks) == 1
    assert refused.group_contains(Fenced)
    assert await provider.leftovers() == []  # nothing was started
    leading = True
    spawned = await provider.spawn(Placement(HOST_NAME, ports[0], None))
    try:
        leading = False
        with pytest.raises(Fenced):
            await containers.remove_quietly(provider, spawned)
        os.kill(int(spawned.handle), 0)  # still running
    finally:
        await provider.remove(spawned)
        await provider.close()
        await stores.aclose()
