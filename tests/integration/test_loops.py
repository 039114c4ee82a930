"""The loops one pass at a time, without a daemon around them: the pool's ``Reconciler.step``/``react`` over
emulator processes and a provider that hands out those emulators as containers, and one ``Dispatcher.round`` over
the real Redis. Each pass is called directly, so each test says what one pass does."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from comfyart.comfy.client import ComfyClient
from comfyart.config.fleet import PoolConfig, StaticBackendConfig
from comfyart.config.sections import SchedulerConfig, TrackingConfig
from comfyart.dispatcher import Dispatcher
from comfyart.files.inputs import InputStore
from comfyart.files.outputs import OutputStore
from comfyart.models import BackendMode, BackendState, NewTask, TaskStatus
from comfyart.policy.placement import Placement
from comfyart.pool.backend import AfterDrain
from comfyart.pool.containers import Containers
from comfyart.pool.health import HealthChecks
from comfyart.pool.providers.base import HostSpec, Spawned
from comfyart.pool.reconciler import Reconciler
from comfyart.pool.registry import Pool
from comfyart.store.pool import ScaleOverride
from comfyart.store.stores import Stores
from comfyart.tracker.outcomes import Outcomes
from comfyart.tracker.prompts import PromptBook
from comfyart.workflows.resolve import Resolver
from tests.conftest import EmulatorProcess, basic_graph, free_port_range


@dataclass
class HandOut:
    """A provider whose "containers" are emulator processes the test started on consecutive ports: ``spawn`` hands
    out the one on the port it is placed on. What the pool starts and removes is recorded."""

    emulators: list[EmulatorProcess]
    kind: str = "fake"
    startup_timeout_s: float = 10.0
    image: str = ""
    removed: list[str] = field(default_factory=list)
    running: set[str] = field(default_factory=set)

    @property
    def hosts(self) -> list[HostSpec]:
        ports = [e.port for e in self.emulators]
        return [HostSpec("here", "127.0.0.1", (min(ports), max(ports)), ())]

    async def spawn(self, placement: Placement) -> Spawned:
        spawned = Spawned(self.kind, placement.host, "127.0.0.1", placement.port, None, str(placement.port),
                          f"fake-{placement.port}")
        self.running.add(spawned.backend_id)
        return spawned

    async def check(self, backend: Spawned) -> str | None:
        return None if backend.backend_id in self.running else "gone"

    async def remove(self, backend: Spawned) -> None:
        self.removed.append(backend.backend_id)
        self.running.discard(backend.backend_id)

    async def leftovers(self) -> list[Spawned]:
        return []

    async def ping(self, host: str) -> None:
        return None

    async def logs(self, backend: Spawned, lines: int = 20) -> str:
        return ""

    async def close(self) -> None:
        return None


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as made:
        yield made


def reconciler_over(pool: Pool, statics: Sequence[StaticBackendConfig] = ()) -> tuple[Reconciler, list[str]]:
    lost: list[str] = []

    async def on_lost(backend, reason: str) -> None:
        lost.append(backend.id)

    containers = Containers(pool, on_lost=on_lost)
    return Reconciler(pool, health=HealthChecks(pool, pool.config), containers=containers, statics=statics), lost


async def test_a_step_brings_static_backends_up_and_a_dead_one_down_after_the_threshold(emulator, session):
    up, dying = emulator(), emulator()
    pool = Pool(config=PoolConfig(min_containers=0, unhealthy_threshold=2), providers=[],
                connect=lambda url: ComfyClient(session, url))
    reconciler, _ = reconciler_over(pool, [StaticBackendConfig(name="up", url=up.url),
                                          StaticBackendConfig(name="dying", url=dying.url)])
    await reconciler.start()  # start-up probes once
    assert pool.ready.is_set()
    assert {b.id: b.state for b in pool.backends.values()} == {"static:up": BackendState.HEALTHY,
                                                              "static:dying": BackendState.HEALTHY}
    dying.stop()
    await reconciler.step()
    assert pool.get("static:dying").state is BackendState.HEALTHY  # one failed check is not enough
    await reconciler.step()
    assert pool.get("static:dying").state is BackendState.UNHEALTHY
    assert pool.get("static:up").state is BackendState.HEALTHY and pool.get("static:dying").error


async def test_steps_scale_up_to_the_minimum_then_drain_what_idles_and_react_stops_it(emulator, session):
    low, high = free_port_range(2)
    provider = HandOut([emulator(port=low), emulator(port=high)])
    pool = Pool(config=PoolConfig(min_containers=2, max_containers=2, idle_timeout_s=0, scale_down_cooldown_s=0,
                                  health_interval_s=0.5),
                providers=[provider], connect=lambda url: ComfyClient(session, url))
    reconciler, lost = reconciler_over(pool)
    async with asyncio.TaskGroup() as launches:
        reconciler.launches = launches  # as run() does: the start-ups are tasks of the loop
        await reconciler.start()
        await reconciler.step()
    assert sorted(provider.running) == sorted(f"fake:here:{e.port}" for e in provider.emulators)
    assert [b.state for b in pool.backends.values()] == [BackendState.HEALTHY] * 2
    assert pool.counters["started"] == 2 and pool.last_decision is not None

    pool.override = ScaleOverride(min_containers=1, max_containers=1)
    reconciler.reset_cooldowns()
    await reconciler.react()  # the load wants one: the longest idle is drained, and stopped as it holds nothing
    draining = [b for b in pool.backends.values() if b.mode is BackendMode.DRAINING]
    assert len(draining) == 1 and draining[0].after_drain is AfterDrain.SCALE_DOWN
    await reconciler.react()
    assert len(pool.backends) == 1 and provider.removed == [draining[0].id] and lost == []
    assert pool.counters["stopped"] == 1


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

