"""The backends comfyart runs itself, through its providers: leftovers of an earlier run adopted or removed,
new ones placed, started and waited for, the hosts and containers watched, and the lost ones removed (their
prompts handed back through ``on_lost``). Start-ups run as tasks of the caller's task group."""
from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable

from loguru import logger

from comfyart.errors import BackendUnavailable, ComfyartError, ContainerFailed, DockerUnavailable, TransientError
from comfyart.models import BackendState
from comfyart.policy.backoff import Backoff
from comfyart.policy.health import HealthCount
from comfyart.policy.placement import Placement, host_rank, place_container
from comfyart.pool.backend import Backend
from comfyart.pool.inventory import Inventories
from comfyart.pool.providers.base import Provider, Spawned
from comfyart.pool.registry import Pool
from comfyart.redact import redact_url
from comfyart.store.fence import ensure_leading

STARTUP_PROBE_TIMEOUT_S = 2.0
STARTUP_POLL_S = 0.2
SPAWN_BACKOFF_MAX_S = 60.0

LostHandler = Callable[[Backend, str], Awaitable[None]]


class Containers:
    def __init__(self, pool: Pool, *, on_lost: LostHandler, adopt_leftovers: bool = True,
                 rand: Callable[[], float] = random.random, inventories: Inventories | None = None,
                 valid: Callable[[], bool] | None = None) -> None:
        self.pool = pool
        self.valid = valid  # the leadership's term still valid: checked right before a provider spawns or removes
        self.inventories = inventories or Inventories(pool, pool.config)
        self.on_lost = on_lost  # the lost backend's prompts go back to the queue
        self.adopt_leftovers = adopt_leftovers
        self.rand = rand
        # after a failed start, the next waits: twice the health interval, doubling up to a minute
        self.spawn_backoff = Backoff(first_s=2 * pool.config.health_interval_s, max_s=SPAWN_BACKOFF_MAX_S)
        self._spawn_failures = 0
        self._next_spawn_at = 0.0
        # local processes of a term that ended, out of the pool (``let_go``): stopped at shutdown unless a later
        # term adopts them again
        self.let_go_processes: list[tuple[Provider, Spawned]] = []

    def reset_backoff(self) -> None:
        """A new term: the failed starts of an earlier one hold nothing back."""
        self._spawn_failures, self._next_spawn_at = 0, 0.0

    def let_go(self) -> None:
        """A leader's term ended and its pool is about to be emptied: containers stay up (the next leader adopts
        them), and the local processes are kept in mind, to be stopped at shutdown as today."""
        self.let_go_processes += [(b.provider, b.spawned) for b in self.pool.backends.values()
                                  if b.kind == "process" and b.provider is not None and b.spawned is not None]

    @property
    def providers(self) -> list[Provider]:
        return self.pool.providers

    # ------------------------------------------------------------------ leftovers
    async def handle_leftovers(self) -> None:
        """At start-up: what an earlier run of this instance left running is adopted (when it still fits the
        configuration), the rest removed."""
        self.let_go_processes = []  # leftovers again: adopted or removed below
        for provider in self.providers:
            try:
                leftovers = await provider.leftovers()
            except DockerUnavailable as exc:
                logger.warning("leftover check failed provider={} error={}", provider.kind, exc)
                continue
            for spawned in leftovers:
                await self._handle_leftover(provider, spawned)

    async def _handle_leftover(self, provider: Provider, spawned: Spawned) -> None:
        host = next((h for h in provider.hosts if h.name == spawned.host), None)
        fits = (host is not None and host.ports[0] <= spawned.port <= host.ports[1]
                and (not host.gpus or spawned.gpu in host.gpus))  # still a slot the configuration offers
        image = (host.image or provider.image) if host is not None else provider.image
        adopt = (self.adopt_leftovers and spawned.running and fits and spawned.backend_id not in self.pool.backends
                 and (not image or spawned.image in ("", image)))
        if not adopt:
            logger.info("removing leftover backend={} running={}", spawned.name, spawned.running)
            ensure_leading(self.valid, f"removing {spawned.name}")
            await provider.remove(spawned)
            return
        backend = self._backend_for(provider, spawned, BackendState.UNHEALTHY)  # healthy once it answers a probe
        self.pool.backends[backend.id] = backend
        logger.info("adopted leftover backend={}", backend.id)

    def _backend_for(self, provider: Provider, spawned: Spawned, state: BackendState) -> Backend:
        host = next((h for h in provider.hosts if h.name == spawned.host), None)
        return Backend(spawned.backend_id, spawned.kind, spawned.host, spawned.url, self.pool.connect(spawned.url),
                       port=spawned.port, gpu=spawned.gpu, name=spawned.name, state=state, spawned=spawned,
                       provider=provider, task_limit=self.pool.config.max_tasks,
                       tags=host.tags if host else frozenset(), weight=host.weight if host else 1.0)

    # ------------------------------------------------------------------ starting
    def start(self, count: int, tasks: asyncio.TaskGroup) -> int:
        """Place and start up to ``count`` backends (fewer where the hosts are full, none while a failed start is
        being backed off); each start-up runs in ``tasks``. Returns how many were placed."""
        if time.monotonic() < self._next_spawn_at:
            return 0
        started = 0
        for _ in range(count):
            placed = self._place()
            if placed is None:
                break
            provider, placement = placed
            backend = self._reserve(provider, placement)
            tasks.create_task(self._launch(backend, provider, placement), name=f"launch {backend.id}")
            started += 1
        return started

    def _place(self) -> tuple[Provider, Placement] | None:
        """Each provider's best host, then the best of those: where the blocked tasks can run, then the fewest
        containers, then the provider listed first."""
        blocked = self.pool.blocked_needs
        candidates: list[tuple[tuple[int, int, int, int], Provider, Placement]] = []
        for provider in self.providers:
            views = self.pool.host_views(provider)
            placement = place_container(views, blocked)
            if placement is not None:
                view = next(v for v in views if v.name == placement.host)
                candidates.append(((*host_rank(view, blocked), view.containers, len(candidates)), provider, placement))
        if not candidates:
            return None
        _, provider, placement = min(candidates, key=lambda c: c[0])
        return provider, placement

    def _reserve(self, provider: Provider, placement: Placement) -> Backend:
        host = next(h for h in provider.hosts if h.name == placement.host)
        url = f"http://{host.address}:{placement.port}"
        backend = Backend(f"{provider.kind}:{placement.host}:{placement.port}", provider.kind, placement.host, url,
                          self.pool.connect(url), port=placement.port, gpu=placement.gpu, provider=provider,
                          task_limit=self.pool.config.max_tasks, tags=host.tags, weight=host.weight)
        self.pool.backends[backend.id] = backend
        return backend

    async def _launch(self, backend: Backend, provider: Provider, placement: Placement) -> None:
        """Start one backend and wait until it answers /system_stats; on failure record why and remove it."""
        logger.info("starting backend={} gpu={}", backend.id, placement.gpu)
        ensure_leading(self.valid, f"starting {backend.id}")  # a Docker create is not fenced by Redis
        try:
            backend.spawned = await provider.spawn(placement)
            backend.name = backend.spawned.name
            failure = await self._wait_until_up(backend, provider, backend.spawned)
        except ContainerFailed as exc:
            failure = str(exc) + (f"; last log lines:\n{exc.last_logs}" if exc.last_logs else "")
        except ComfyartError as exc:
            failure = str(exc)
        if failure is None:
            await self.inventories.read(backend)  # what it can run, before it is given anything
        if self.pool.backends.get(backend.id) is not backend:
            return  # given up meanwhile (its host went down)
        if failure is None:
            self._spawn_failures = 0
            self.pool.counters["started"] += 1
            backend.move_to(BackendState.HEALTHY)
            backend.health = HealthCount(True)
            backend.started = backend.idle_since = time.monotonic()
            logger.info("backend up backend={} url={}", backend.id, redact_url(backend.url))
            self.pool.notify()
            return
        logger.error("backend failed to start backend={} reason={}", backend.id, failure)
        self.pool.record_error(backend, failure)
        self.pool.backends.pop(backend.id, None)
        self._spawn_failures += 1
        self._next_spawn_at = time.monotonic() + self.spawn_backoff.delay(self._spawn_failures, self.rand())
        if backend.spawned is not None:
            await self.remove_quietly(provider, backend.spawned)

    async def _wait_until_up(self, backend: Backend, provider: Provider, spawned: Spawned) -> str | None:
        deadline = time.monotonic() + provider.startup_timeout_s
        while time.monotonic() < deadline:
            reason = await provider.check(spawned)
            if reason is not None:
                return f"backend exited during start-up: {reason}"
            try:
                backend.record_stats(await backend.client.system_stats(timeout_s=STARTUP_PROBE_TIMEOUT_S))
                return None
            except BackendUnavailable:
                await asyncio.sleep(STARTUP_POLL_S)
        logs = await provider.logs(spawned)
        return (f"did not answer /system_stats within {provider.startup_timeout_s:g} s"
                + (f"; last log lines:\n{logs}" if logs else ""))

    # ------------------------------------------------------------------ watching
    async def check_hosts(self) -> None:
        """Ping each host; an unreachable one is marked down, skipped by placement, and its backends are lost.
        The containers of a live host are inspected: exited, out of memory or gone means lost."""
        for provider in self.providers:
            for host in provider.hosts:
                try:
                    await provider.ping(host.name)
                    if self.pool.hosts_down.pop(host.name, None) is not None:
                        logger.info("host back host={}", host.name)
                        await self._clear_leftovers(provider, host.name)
                    await self._check_containers(provider, host.name)
                except DockerUnavailable as exc:
                    await self._host_down(host.name, str(exc))

    async def _check_containers(self, provider: Provider, host: str) -> None:
        for backend in [b for b in self.pool.backends.values() if b.provider is provider and b.host == host
                        and b.state != BackendState.STARTING]:
            if backend.spawned is None:
                continue
            reason = await provider.check(backend.spawned)
            if reason is not None:
                await self.lose(backend, reason, replace=True)

    async def _host_down(self, host: str, error: str) -> None:
        if host not in self.pool.hosts_down:
            logger.warning("host down host={} error={}", host, error)
        self.pool.hosts_down[host] = error
        for backend in [b for b in self.pool.backends.values() if b.managed and b.host == host
                        and b.state != BackendState.STARTING]:
            await self.lose(backend, f"its Docker host {host} is unreachable: {error}", replace=True)

    async def _clear_leftovers(self, provider: Provider, host: str) -> None:
        """A host that comes back may still hold the containers of backends given up for lost."""
        try:
            leftovers = await provider.leftovers()
        except DockerUnavailable:
            return
        for spawned in leftovers:
            if spawned.host == host and spawned.backend_id not in self.pool.backends:
                await self.remove_quietly(provider, spawned)

    # ------------------------------------------------------------------ stopping
    async def lose(self, backend: Backend, reason: str, *, replace: bool) -> None:
        """A backend died: forget it, hand its prompts back (``on_lost``), remove it. Should Redis fail half-way,
        it is back in the pool, unhealthy, with the prompts not yet handed back: the next round loses it again."""
        logger.warning("backend lost backend={} reason={}", backend.id, reason.splitlines()[0])
        self.pool.backends.pop(backend.id, None)
        try:
            await self.on_lost(backend, reason)
        except TransientError:
            if backend.state == BackendState.HEALTHY:  # no new prompts meanwhile
                backend.move_to(BackendState.UNHEALTHY)
                backend.unhealthy_since = time.monotonic()
            self.pool.backends.setdefault(backend.id, backend)
            raise
        self.pool.record_error(backend, reason)
        if backend.managed:
            self.pool.counters["lost"] += 1
            if replace:
                self.pool.replacements += 1
        if backend.provider and backend.spawned and backend.host not in self.pool.hosts_down:
            await self.remove_quietly(backend.provider, backend.spawned)
        self.pool.notify()

    async def remove_quietly(self, provider: Provider, spawned: Spawned) -> None:
        ensure_leading(self.valid, f"removing {spawned.name}")
        try:
            await provider.remove(spawned)
        except ComfyartError as exc:
            logger.warning("removing backend failed backend={} error={}", spawned.backend_id, exc)

    async def shutdown(self) -> None:
        """Stop the local processes this run started; containers stay up and are adopted at the next start."""
        for backend in list(self.pool.backends.values()):
            if backend.kind == "process" and backend.provider and backend.spawned:
                await backend.provider.remove(backend.spawned)
        for provider, spawned in self.let_go_processes:
            await provider.remove(spawned)
        self.let_go_processes = []
        for provider in self.providers:
            await provider.close()
