"""Hosts whose containers have different models, one reconciler pass at a time: host ``a``'s "containers" (emulator
processes) have checkpoint x, host ``b``'s x and y. The pool remembers what each host's containers reported after
they stop, starts a container for blocked tasks where they can run, and makes room for it at max_containers.
(The same on two real Docker engines: providers/test_docker.py.)"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass

from comfyart.comfy.client import ComfyClient
from comfyart.config.fleet import PoolConfig
from comfyart.models import BackendMode
from comfyart.policy.needs import Needs
from comfyart.pool.backend import AfterDrain
from comfyart.pool.containers import Containers
from comfyart.pool.health import HealthChecks
from comfyart.pool.inventory import Inventories
from comfyart.pool.providers.base import HostSpec
from comfyart.pool.reconciler import Reconciler
from comfyart.pool.registry import Pool
from comfyart.store.pool import ScaleOverride
from tests.integration.pool.test_reconciler import HandOut

LOADER = "CheckpointLoaderSimple"
NEEDS_Y = Needs(nodes=frozenset({LOADER}), values=frozenset({(LOADER, "ckpt_name", "y.safetensors")}))


@dataclass
class TwoHosts(HandOut):
    """Host ``a`` is the first emulator's port (and, with ``spare``, the next: room where nothing answers), host ``b``
    the second's."""

    spare: bool = False

    @property
    def hosts(self) -> list[HostSpec]:
        a, b = self.emulators
        return [HostSpec("a", "127.0.0.1", (a.port, a.port + self.spare), ()),
                HostSpec("b", "127.0.0.1", (b.port, b.port), ())]


def two_hosts(emulator, session, spare=False, **config) -> tuple[Pool, Reconciler, Inventories, TwoHosts]:
    provider = TwoHosts([emulator("--checkpoints", "x.safetensors"),
                         emulator("--checkpoints", "x.safetensors,y.safetensors")], spare=spare)
    pool_config = PoolConfig(**{"idle_timeout_s": 0, "scale_down_cooldown_s": 0, "scale_up_cooldown_s": 0,
                                "tasks_per_container": 10, "health_interval_s": 0.5, **config})
    pool = Pool(config=pool_config, providers=[provider], connect=lambda url: ComfyClient(session, url))
    inventories = Inventories(pool, pool_config)

    async def on_lost(backend, reason: str) -> None:
        raise AssertionError(f"{backend.id} lost: {reason}")

    reconciler = Reconciler(pool, health=HealthChecks(pool, pool_config, inventories),
                            containers=Containers(pool, on_lost=on_lost, inventories=inventories))
    return pool, reconciler, inventories, provider


async def pass_and_wait(reconciler: Reconciler, inventories: Inventories) -> None:
    """One pass whose start-ups are waited for: a container started is healthy with its inventory read."""
    async with asyncio.TaskGroup() as launches:
        reconciler.launches = launches
        await reconciler.react()
    assert all(b.inventory is not None for b in reconciler.pool.healthy()), "healthy before its inventory was read"


async def test_blocked_tasks_start_a_container_on_the_host_that_has_their_model_after_both_scaled_to_zero(
        emulator, session):
    pool, reconciler, inventories, provider = two_hosts(emulator, session, min_containers=2, max_containers=2)
    await reconciler.start()
    await pass_and_wait(reconciler, inventories)
    assert sorted(b.host for b in pool.backends.values()) == ["a", "b"]
    # scaled to zero: no container left, but the pool still knows what each host's had
    pool.override = ScaleOverride(min_containers=0)
    await reconciler.react()
    await reconciler.react()
    assert pool.backends == {}
    assert set(pool.host_inventories) == {("fake", "a"), ("fake", "b")}
    fleet = await inventories.fleet()
    assert fleet is not None and fleet.refusal(NEEDS_Y) is None  # a task for y is still admitted
    assert "y.safetensors" in (await inventories.object_info() or {})[LOADER]["input"]["required"]["ckpt_name"][0]
    # a task for y waits blocked: the load alone (1 task at 10 per container, min 0) would start nothing, and the
    # first host listed (a, as many containers as b) would be the one
    pool.note_blocked({NEEDS_Y: 1})
    await pass_and_wait(reconciler, inventories)
    [started] = pool.backends.values()
    assert started.host == "b" and "1 blocked task(s)" in pool.last_decision.reason
    assert started.inventory is not None and started.inventory.covers(NEEDS_Y)


async def test_at_max_an_idle_container_that_cannot_run_them_gives_way_to_one_that_can(emulator, session):
    pool, reconciler, inventories, provider = two_hosts(emulator, session, min_containers=1, max_containers=1)
    await reconciler.start()
    await pass_and_wait(reconciler, inventories)
    [on_a] = pool.backends.values()
    assert on_a.host == "a"
    pool.note_blocked({NEEDS_Y: 2})  # b never seen: a container there might have y
    await pass_and_wait(reconciler, inventories)
    assert on_a.mode is BackendMode.DRAINING and on_a.after_drain is AfterDrain.SCALE_DOWN
    assert "cannot run the tasks that wait blocked" in (on_a.drain_reason or "")
    await reconciler.react()  # the drained one holds nothing: stopped
    [on_b] = pool.backends.values()
    assert on_b.host == "b" and provider.removed == [on_a.id]
    assert on_b.inventory is not None and on_b.inventory.covers(NEEDS_Y)
    await reconciler.react()
    assert list(pool.backends.values()) == [on_b], "one that can run them stays: no swapping back"


async def test_blocked_tasks_no_host_could_run_start_nothing(emulator, session):
    pool, reconciler, inventories, provider = two_hosts(emulator, session, spare=True, min_containers=2,
                                                        max_containers=3)
    await reconciler.start()
    await pass_and_wait(reconciler, inventories)
    needs_z = Needs(nodes=frozenset({LOADER}), values=frozenset({(LOADER, "ckpt_name", "z.safetensors")}))
    pool.note_blocked({needs_z: 5})
    await pass_and_wait(reconciler, inventories)
    assert len(pool.backends) == 2 and pool.last_decision is not None and "blocked" not in pool.last_decision.reason
    pool.note_blocked({NEEDS_Y: 5})  # b's container can run them: it is busy, or not taking work, for a while
    await pass_and_wait(reconciler, inventories)
    assert len(pool.backends) == 2 and "blocked" not in pool.last_decision.reason
