"""The pool's loop: observe the backends and the queue, let ``policy`` decide, act.

A full round (``step``) runs every ``pool.health_interval_s``: probe every backend, requeue the prompts of static
backends out of reach too long, check the hosts and their containers, recycle the worn-out, stop the drained,
scale. Between rounds the loop wakes on what changes the load (a task queued, a prompt ended, a backend up or gone)
and runs the cheap part (``react``: stop the drained, scale) ``REACT_DELAY_S`` later: a burst of tasks starts
containers within a second instead of at the next round, and, as it has arrived whole by then, in one step (a
scale-up's cooldown would hold back whatever came after a step taken at its first task).
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

from loguru import logger

from comfyart.clock import now_ms
from comfyart.config.fleet import DnsBackendConfig, StaticBackendConfig
from comfyart.errors import TransientError
from comfyart.models import BackendMode, BackendState
from comfyart.policy.autoscale import (
    ContainerState,
    ContainerView,
    ScaleDecision,
    ScaleInput,
    decide_elsewhere,
    decide_scale,
    free_container_slots,
)
from comfyart.policy.health import Recycle, recycle_reason
from comfyart.policy.placement import serves_any, unserved
from comfyart.pool.backend import AfterDrain
from comfyart.pool.containers import Containers
from comfyart.pool.discovery import DnsBackends
from comfyart.pool.health import HealthChecks
from comfyart.pool.registry import Pool
from comfyart.pool.unreachable import give_up_silent
from comfyart.store.pool import PoolStore
from comfyart.store.queue import TaskQueue

REACT_DELAY_S = 1.0  # from a change to the reaction to it: what arrives meanwhile is taken in the same step


class Reconciler:
    def __init__(self, pool: Pool, *, health: HealthChecks, containers: Containers,
                 statics: Sequence[StaticBackendConfig] = (), store: PoolStore | None = None,
                 queue: TaskQueue | None = None, dns: Sequence[DnsBackendConfig] = ()) -> None:
        self.pool = pool
        self.statics = list(statics)  # the configuration's static backends
        # the backends found by DNS (``dns_backends``): looked up at each start, then by a loop of the pool's term
        self.dns = DnsBackends(dns, pool, health) if dns else None
        self.health = health
        self.containers = containers
        self.store = store
        self.queue = queue  # its tasks queued or claimed are the autoscaler's load
        self.wake = asyncio.Event()  # set by the queue and the pool: something changed the load
        pool.wakeups.append(self.wake)
        if queue is not None:
            queue.wakeups.append(self.wake)
        self._step_lock = asyncio.Lock()  # the loop and the API's requests never interleave
        self.launches: asyncio.TaskGroup | None = None  # where start-ups run: run() makes its own
        self._last_scale_up: float | None = None
        self._last_scale_down: float | None = None

    # ------------------------------------------------------------------ loop
    async def run(self) -> None:
        """Run the pool for one leader's term: the cooldowns of an earlier term forgotten, ``start`` reads the
        static backends again and adopts the containers running (the pool was emptied: ``Pool.reset``)."""
        self.reset_cooldowns()
        self.containers.reset_backoff()
        try:
            async with asyncio.TaskGroup() as launches:
                self.launches = launches
                await self.start()
                if self.dns is not None:  # its term is the pool's: cancelled with it, started afresh with it
                    launches.create_task(self.dns.run(), name="dns backends")
                next_round = 0.0
                while True:
                    self.wake.clear()
                    try:
                        if time.monotonic() >= next_round:
                            next_round = time.monotonic() + self.pool.config.health_interval_s
                            await self.step()
                        else:
                            await self.react()
                    except TransientError as exc:  # Redis (the queue length) away for a moment: next round
                        logger.warning("pool round cut short error={}", exc)
                    await self._until(next_round)
        finally:
            self.launches = None  # between terms nothing starts (an admin's scale order waits for the next)

    async def _until(self, next_round: float) -> None:
        """Sleep until the next round, or until REACT_DELAY_S after a wake-up, whichever comes first."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, next_round - time.monotonic())):
                await self.wake.wait()
                await asyncio.sleep(REACT_DELAY_S)

    async def start(self) -> None:
        """Static backends (configured, then registered at run time), scale settings made at run time, the
        backends found by DNS, the leftovers of an earlier run; one probe of everything; then the pool is ready."""
        for static in self.statics:
            self.pool.add_static(static, "config")
        if self.store is not None:
            for name, static in (await self.store.static_backends()).items():
                if f"static:{name}" not in self.pool.backends:
                    self.pool.add_static(static, "api")
            self.pool.override = await self.store.scale_override()
        if self.dns is not None:  # before ready: the tracker's recovery finds the backends its prompts are on
            await self.dns.first_look()
        await self.containers.handle_leftovers()
        await self.health.probe_all()
        self.pool.ready.set()

    async def step(self, *, every: bool = False) -> None:
        """One whole pass: probe the backends (``every`` one, or those due: ``policy.health.probe_due``), give up on
        the prompts of static backends out of reach, check the hosts and containers, recycle, finish drains,
        scale."""
        async with self._step_lock:
            await self.health.probe_all(every=every)
            await give_up_silent(self.pool, self.containers.on_lost)
            await self.containers.check_hosts()
            await self._recycle()
            await self.finish_drains()
            await self._autoscale()

    async def react(self) -> None:
        """The cheap part of a pass, on a change: finish drains, scale."""
        async with self._step_lock:
            await self.finish_drains()
            await self._autoscale()

    def reset_cooldowns(self) -> None:
        """An explicit order (new scale limits) is not held back by the cooldowns."""
        self._last_scale_up = self._last_scale_down = None

    # ------------------------------------------------------------------ recycling and drains
    async def _recycle(self) -> None:
        now = time.monotonic()
        config = self.pool.config
        for backend in [b for b in self.pool.backends.values() if b.managed and b.state != BackendState.STARTING]:
            if backend.mode == BackendMode.DRAINING:
                continue
            verdict = recycle_reason(
                tasks_done=backend.tasks_done, age_s=now - backend.started,
                unhealthy_s=None if backend.unhealthy_since is None else now - backend.unhealthy_since,
                max_tasks=config.max_tasks, max_age_s=config.max_age_s,
                replace_unhealthy_after_s=config.replace_unhealthy_after_s)
            if verdict is None:
                continue
            how, why = verdict
            if how is Recycle.NOW:
                await self.containers.lose(backend, f"replaced: {why}", replace=True)
            else:
                backend.drain(AfterDrain.RECYCLE, why)

    async def finish_drains(self) -> None:
        """Draining backends that hold no prompt any more: stopped, replaced or forgotten (or held)."""
        for backend in list(self.pool.backends.values()):
            if backend.mode != BackendMode.DRAINING or backend.prompts or backend.after_drain == AfterDrain.HOLD:
                continue
            after = backend.after_drain
            logger.info("drained backend={} then={}", backend.id, after)
            self.pool.backends.pop(backend.id, None)
            if after == AfterDrain.RECYCLE:
                self.pool.replacements += 1
                self.pool.counters["recycled"] += 1
            elif backend.managed:
                self.pool.counters["stopped"] += 1
            if backend.provider is not None and backend.spawned is not None:
                await self.containers.remove_quietly(backend.provider, backend.spawned)
            self.pool.notify()

    # ------------------------------------------------------------------ scaling
    def _container_views(self, now: float) -> list[ContainerView]:
        blocked = self.pool.blocked_needs
        views = []
        for backend in self.pool.backends.values():
            if not backend.managed:
                continue
            if backend.mode == BackendMode.DRAINING and backend.after_drain != AfterDrain.SCALE_DOWN:
                continue  # on its way out (recycled, drained by hand): not part of the pool's size
            state = {BackendState.STARTING: ContainerState.STARTING,
                     BackendState.HEALTHY: ContainerState.HEALTHY}.get(backend.state, ContainerState.UNHEALTHY)
            idle = 0.0 if backend.mode == BackendMode.DISABLED else backend.idle_s(now)  # disabled: kept as is
            views.append(ContainerView(backend.id, state, backend.mode == BackendMode.DRAINING,
                                       len(backend.prompts), idle,
                                       serves_blocked=not blocked or serves_any(self.pool.runner(backend), blocked)))
        return views

    async def _observe(self, now: float) -> ScaleInput:
        pool = self.pool
        statics = [b for b in pool.backends.values() if not b.managed]
        return ScaleInput(
            queued=await self.queue.waiting() if self.queue is not None else 0,
            running=sum(len(b.prompts) for b in pool.backends.values()),
            containers=tuple(self._container_views(now)),
            free_slots=sum(free_container_slots(pool.host_views(p)) for p in pool.providers),
            static_capacity=sum(1 for b in statics if b.state == BackendState.HEALTHY and b.accepting),
            since_scale_up_s=None if self._last_scale_up is None else now - self._last_scale_up,
            since_scale_down_s=None if self._last_scale_down is None else now - self._last_scale_down,
            replacements=pool.replacements, blocked=self._unserved())

    def _unserved(self) -> int:
        """Blocked tasks that no backend up or starting (draining ones aside) could run, and a new container
        could."""
        pool = self.pool
        if not pool.blocked_needs:
            return 0
        runners = [pool.runner(b) for b in pool.backends.values() if b.mode != BackendMode.DRAINING]
        hosts = [view for provider in pool.providers for view in pool.host_views(provider)]
        return unserved(pool.blocked_needs, runners, hosts)

    async def _autoscale(self) -> None:
        pool = self.pool
        if not pool.providers:  # someone else runs the backends: the count they should scale to, no action
            await self._decide_elsewhere()
            return
        now = time.monotonic()
        observed = await self._observe(now)
        decision = decide_scale(observed, pool.limits())
        self._record(decision)
        for backend_id in decision.undrain:
            pool.backends[backend_id].activate()
        for backend_id in decision.drain:
            pool.backends[backend_id].drain(AfterDrain.SCALE_DOWN, decision.drain_reason)
        if decision.drain:
            self._last_scale_down = now
        if decision.undrain:
            pool.notify()
        if decision.start and self.launches is not None:  # None: not leading (containers start from the loop)
            started = self.containers.start(decision.start, self.launches)
            if started:
                self._last_scale_up = now
                pool.replacements = max(0, pool.replacements - started)
        if decision.desired <= sum(1 for c in observed.containers if not c.draining):
            pool.replacements = 0  # nothing is owed to a pool that has what it wants

    async def _decide_elsewhere(self) -> None:
        """No provider (Kubernetes scales the backends, issue 25): the policy's count for the load is recorded as
        the decision, which ``/metrics`` exports on every replica (a standby's from the pool mirror)."""
        pool = self.pool
        queued = await self.queue.waiting() if self.queue is not None else 0
        running = sum(len(b.prompts) for b in pool.backends.values())
        up = sum(1 for b in pool.backends.values() if b.state == BackendState.HEALTHY and b.accepting)
        self._record(decide_elsewhere(queued, running, up, pool.limits()))

    def _record(self, decision: ScaleDecision) -> None:
        """Keep ``decision`` as the last one when it acts or says something new (a scaling that acts is logged)."""
        pool = self.pool
        if decision.acts or pool.last_decision is None or decision.reason != pool.last_decision.reason:
            if decision.acts:
                logger.info("autoscale {}", decision.reason)
                pool.recent_scaling.append({"reason": decision.reason, "start": decision.start,
                                            "drain": list(decision.drain), "at_ms": now_ms()})
            pool.last_decision, pool.last_decision_ms = decision, now_ms()
