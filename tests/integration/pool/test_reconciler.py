"""The pool's reconciler one pass at a time, without a daemon around it: ``Reconciler.step``/``react`` over emulator
processes and a provider that hands out those emulators as containers. Each pass is called directly, so each test
says what one pass does."""
from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from comfyart.comfy.client import ComfyClient
from comfyart.config.fleet import PoolConfig, StaticBackendConfig
from comfyart.models import BackendMode, BackendState
from comfyart.policy.placement import Placement
from comfyart.pool.backend import AfterDrain
from comfyart.pool.containers import Containers
from comfyart.pool.health import HealthChecks
from comfyart.pool.providers.base import HostSpec, Spawned
from comfyart.pool.reconciler import Reconciler
from comfyart.pool.registry import Pool
from comfyart.store.pool import ScaleOverride
from tests.support.emulator import EmulatorProcess
from tests.support.ports import free_port_range


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
