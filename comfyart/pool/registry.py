"""The pool of ComfyUI backends: static URLs (from the configuration, or registered at run time) plus what the
providers spawn. One loop health-checks them, replaces dead, sick and worn-out containers, and scales the
container count with the queue; the decisions are the pure functions of ``autoscale``, this module only observes
and acts. Start-ups and stops run as tasks the loop owns.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from loguru import logger

from comfyart.clock import now_ms
from comfyart.comfy import protocol
from comfyart.comfy.client import ComfyClient
from comfyart.config.fleet import PoolConfig, StaticBackendConfig
from comfyart.errors import (
    BackendUnavailable,
    ComfyartError,
    ContainerFailed,
    DockerUnavailable,
    InvalidInput,
    NotFound,
    StateConflict,
    TransientError,
)
from comfyart.models import BackendMode, BackendState
from comfyart.policy.autoscale import (
    ContainerState,
    ContainerView,
    ScaleDecision,
    ScaleInput,
    ScaleLimits,
    decide_scale,
    free_container_slots,
)
from comfyart.policy.health import HealthCount, Recycle, after_health_check, recycle_reason
from comfyart.policy.placement import HostView, Placement, place_container
from comfyart.policy.scheduling import BackendSlot
from comfyart.pool.providers.base import Provider, Spawned
from comfyart.redact import redact_url
from comfyart.store.pool import PoolStore, ScaleOverride

STARTUP_PROBE_TIMEOUT_S = 2.0
SPAWN_BACKOFF_MAX_S = 60.0



class AfterDrain:
    """What happens to a draining backend once it holds no prompt."""

    SCALE_DOWN = "scale-down"  # the autoscaler's: stopped, unless the load comes back first
    STOP = "stop"  # drained by hand: stopped
    RECYCLE = "recycle"  # stopped and replaced
    REMOVE = "remove"  # a static backend deregistered through the API: forgotten
    HOLD = "hold"  # a static backend drained by hand: stays, taking nothing, until enabled


@dataclass
class Backend:
    id: str
    kind: str  # "docker", "process" or "static"
    host: str
    url: str
    client: ComfyClient
    port: int | None = None
    gpu: int | None = None
    name: str = ""
    state: BackendState = BackendState.STARTING
    mode: BackendMode = BackendMode.ACTIVE
    after_drain: str | None = None
    drain_reason: str | None = None
    source: str = "config"  # static backends: "config" or "api"
    spawned: Spawned | None = None
    provider: Provider | None = None
    prompts: dict[str, str] = field(default_factory=dict)  # prompt id -> task id, in flight here
    prompt_costs: dict[str, float] = field(default_factory=dict)  # prompt id -> its graph's estimated cost
    tasks_done: int = 0
    health: HealthCount = field(default_factory=lambda: HealthCount(False))
    unhealthy_since: float | None = None  # monotonic
    idle_since: float = field(default_factory=time.monotonic)
    started: float = field(default_factory=time.monotonic)
    stuck_prompt: str | None = None  # a prompt that timed out here and may still occupy the backend
    task_limit: int = 0  # max_tasks for a container: it takes no more than that many, then it is recycled
    last_health_ms: int | None = None
    vram_total: int | None = None
    vram_free: int | None = None
    ram_free: int | None = None
    tags: frozenset[str] = frozenset()
    weight: float = 1.0
    models: frozenset[str] = frozenset()  # of the last prompt given to it: what it has loaded once that runs
    last_dispatch: int = 0  # the dispatcher's sequence number of that prompt
    error: str | None = None
    created_ms: int = field(default_factory=now_ms)

    @property
    def managed(self) -> bool:
        return self.kind != "static"

    @property
    def accepting(self) -> bool:
        if self.task_limit and self.tasks_done + len(self.prompts) >= self.task_limit:
            return False
        return self.mode == BackendMode.ACTIVE

    def slot(self) -> BackendSlot:
        return BackendSlot(self.id, len(self.prompts), self.state == BackendState.HEALTHY, self.accepting,
                           self.tags, self.weight, self.vram_total, self.vram_free, self.models, self.last_dispatch,
                           work=sum(self.prompt_costs.values()))

    def idle_s(self, now: float) -> float:
        return 0.0 if self.prompts else max(0.0, now - self.idle_since)

    def describe(self) -> dict[str, Any]:
        now = time.monotonic()
        return {"id": self.id, "kind": self.kind, "name": self.name, "host": self.host, "url": redact_url(self.url),
                "port": self.port, "gpu": self.gpu, "status": self.state.value, "mode": self.mode.value,
                "after_drain": self.after_drain, "drain_reason": self.drain_reason,
                "source": self.source if self.kind == "static" else None, "inflight": len(self.prompts),
                "tasks": sorted(set(self.prompts.values())),
                "tasks_done": self.tasks_done, "idle_s": round(self.idle_s(now), 1),
                "age_s": round(now - self.started, 1), "last_health_check_ms": self.last_health_ms,
                "health_failures": self.health.failures, "vram_total": self.vram_total,
                "vram_free": self.vram_free, "ram_free": self.ram_free, "tags": sorted(self.tags),
                "weight": self.weight, "models": sorted(self.models), "error": self.error,
                "created_ms": self.created_ms}


LostHandler = Callable[[Backend, str], Awaitable[None]]
WaitingCount = Callable[[], Awaitable[int]]


class Pool:
    def __init__(self, *, config: PoolConfig, providers: Sequence[Provider],
                 static_backends: Sequence[StaticBackendConfig], session: aiohttp.ClientSession,
                 store: PoolStore | None = None, waiting: WaitingCount | None = None,
                 request_timeout_s: float = 30.0, adopt_leftovers: bool = True) -> None:
        self.config = config
        self.providers = list(providers)
        self.static_backends = list(static_backends)
        self.session = session
        self.store = store
        self.waiting = waiting  # tasks queued or claimed, for the autoscaler
        self.request_timeout_s = request_timeout_s
        self.adopt_leftovers = adopt_leftovers
        self.backends: dict[str, Backend] = {}
        self.recent_errors: deque[dict[str, Any]] = deque(maxlen=20)
        self.recent_scaling: deque[dict[str, Any]] = deque(maxlen=20)  # decisions that started or drained something
        self.hosts_down: dict[str, str] = {}
        self.ready = asyncio.Event()  # set once leftovers are handled and static backends listed
        self.on_lost: LostHandler | None = None
        self.override = ScaleOverride()
        self.last_decision: ScaleDecision | None = None
        self.last_decision_ms: int | None = None
        self._changed = asyncio.Event()  # set, and replaced, at each change
        self.wakeups: list[asyncio.Event] = []  # set on every change too, for loops that wait on several things
        self._step_lock = asyncio.Lock()
        self._spawn_failures = 0
        self._next_spawn_at = 0.0
        self._last_scale_up: float | None = None
        self._last_scale_down: float | None = None
        self._replacements = 0
        self._tasks: asyncio.TaskGroup | None = None
        # since this process started: containers started, lost (died, host down, unhealthy too long), recycled
        # (max_tasks, max_age, by hand), stopped (scaled down or drained by hand)
        self.counters = {"started": 0, "lost": 0, "recycled": 0, "stopped": 0}

    # ------------------------------------------------------------------ views
    def slots(self) -> list[BackendSlot]:
        return [b.slot() for b in self.backends.values()]

    def healthy(self) -> list[Backend]:
        return [b for b in self.backends.values() if b.state == BackendState.HEALTHY]

    def host_views(self, provider: Provider) -> list[HostView]:
        views = []
        for host in provider.hosts:
            mine = [b for b in self.backends.values() if b.kind == provider.kind and b.host == host.name]
            views.append(HostView(host.name, host.ports, host.gpus, frozenset(b.port for b in mine if b.port),
                                  frozenset(b.gpu for b in mine if b.gpu is not None), len(mine),
                                  available=host.name not in self.hosts_down))
        return views

    def limits(self, override: ScaleOverride | None = None) -> ScaleLimits:
        """The configuration with the run-time overrides (``self.override`` unless another is given) on top."""
        cfg, override = self.config, override or self.override
        return ScaleLimits(
            min_containers=cfg.min_containers if override.min_containers is None else override.min_containers,
            max_containers=cfg.max_containers if override.max_containers is None else override.max_containers,
            tasks_per_container=cfg.tasks_per_container, scale_up_cooldown_s=cfg.scale_up_cooldown_s,
            scale_down_cooldown_s=cfg.scale_down_cooldown_s, idle_timeout_s=cfg.idle_timeout_s,
            target=override.target)

    def get(self, backend_id: str) -> Backend:
        backend = self.backends.get(backend_id)
        if backend is None:
            raise NotFound(f"no backend {backend_id}")
        return backend

    def notify(self) -> None:
        """Wake whoever waits for the pool to change (a free slot, a new backend). No lock: this runs once per
        finished prompt, and waiters queueing on a lock each cost a lap of the event loop."""
        for event in self.wakeups:
            event.set()
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_changed(self, timeout_s: float) -> None:
        changed = self._changed
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await changed.wait()

    # ------------------------------------------------------------------ loop
    async def run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            self._tasks = tasks
            await self._start()
            while True:
                try:
                    await self.step()
                except TransientError as exc:  # Redis (the queue length) away for a moment: next round
                    logger.warning("pool round cut short error={}", exc)
                await asyncio.sleep(self.config.health_interval_s)

    async def _start(self) -> None:
        for static in self.static_backends:
            self._add_static_backend(static, "config")
        if self.store is not None:
            for name, static in (await self.store.static_backends()).items():
                if f"static:{name}" not in self.backends:
                    self._add_static_backend(static, "api")
            self.override = await self.store.scale_override()
        for provider in self.providers:
            try:
                leftovers = await provider.leftovers()
            except DockerUnavailable as exc:
                logger.warning("leftover check failed provider={} error={}", provider.kind, exc)
                continue
            for spawned in leftovers:
                await self._handle_leftover(provider, spawned)
        await self._probe_all()
        self.ready.set()

    def _add_static_backend(self, static: StaticBackendConfig, source: str) -> Backend:
        backend = Backend(f"static:{static.name}", "static", "static", static.url,
                          ComfyClient(self.session, static.url, timeout_s=self.request_timeout_s), name=static.name,
                          state=BackendState.UNHEALTHY, source=source,  # healthy once it answers a probe
                          tags=frozenset(static.tags), weight=static.weight)
        self.backends[backend.id] = backend
        return backend

    async def _handle_leftover(self, provider: Provider, spawned: Spawned) -> None:
        host = next((h for h in provider.hosts if h.name == spawned.host), None)
        fits = (host is not None and host.ports[0] <= spawned.port <= host.ports[1]
                and (not host.gpus or spawned.gpu in host.gpus))  # still a slot the configuration offers
        adopt = (self.adopt_leftovers and spawned.running and fits and spawned.backend_id not in self.backends
                 and (not provider.image or spawned.image in ("", provider.image)))
        if not adopt:
            logger.info("removing leftover backend={} running={}", spawned.name, spawned.running)
            await provider.remove(spawned)
            return
        backend = self._backend_for(provider, spawned)
        backend.state = BackendState.UNHEALTHY  # healthy once it answers a probe
        self.backends[backend.id] = backend
        logger.info("adopted leftover backend={}", backend.id)

    def _backend_for(self, provider: Provider, spawned: Spawned) -> Backend:
        host = next((h for h in provider.hosts if h.name == spawned.host), None)
        return Backend(spawned.backend_id, spawned.kind, spawned.host, spawned.url,
                       ComfyClient(self.session, spawned.url, timeout_s=self.request_timeout_s),
                       port=spawned.port, gpu=spawned.gpu, name=spawned.name, spawned=spawned, provider=provider,
                       task_limit=self.config.max_tasks, tags=host.tags if host else frozenset(),
                       weight=host.weight if host else 1.0)

    async def step(self) -> None:
        """One pass: probe every backend, check the hosts and containers, recycle, finish drains, scale."""
        async with self._step_lock:  # the loop and POST /api/pool/health-check never interleave
            await self._probe_all()
            await self._check_hosts()
            await self._recycle()
            await self._finish_drains()
            await self._autoscale()

    # ------------------------------------------------------------------ health
    async def _probe_all(self) -> None:
        probed = [b for b in self.backends.values() if b.state in (BackendState.HEALTHY, BackendState.UNHEALTHY)]
        await asyncio.gather(*(self._probe(b) for b in probed))

    async def _probe(self, backend: Backend) -> None:
        error: str | None = None
        try:
            stats = await backend.client.system_stats(timeout_s=self.config.health_timeout_s)
            if backend.stuck_prompt is not None:
                error = await self._still_stuck(backend)
        except BackendUnavailable as exc:
            error = str(exc)
        backend.last_health_ms = now_ms()
        was_healthy = backend.state == BackendState.HEALTHY
        backend.health = after_health_check(backend.health, error is None,
                                            unhealthy_threshold=self.config.unhealthy_threshold,
                                            healthy_threshold=self.config.healthy_threshold)
        if error is None:
            self._record_stats(backend, stats)
        else:
            backend.error = error
        if backend.health.healthy and not was_healthy:
            backend.state = BackendState.HEALTHY
            backend.error = None
            backend.unhealthy_since = None
            backend.idle_since = time.monotonic()
            logger.info("backend healthy backend={} url={}", backend.id, redact_url(backend.url))
            self.notify()
        elif not backend.health.healthy:
            if was_healthy:
                logger.warning("backend unhealthy backend={} error={}", backend.id, error)
            backend.state = BackendState.UNHEALTHY
            if backend.unhealthy_since is None:
                backend.unhealthy_since = time.monotonic()

    async def _still_stuck(self, backend: Backend) -> str | None:
        """A prompt timed out here: the backend stays unhealthy while it still runs it (ComfyUI cannot interrupt a
        node that reports no progress)."""
        queue = await backend.client.queue()
        if protocol.prompt_running(queue, backend.stuck_prompt or ""):
            return f"still running prompt {backend.stuck_prompt}, which timed out"
        backend.stuck_prompt = None
        return None

    @staticmethod
    def _record_stats(backend: Backend, stats: dict[str, Any]) -> None:
        backend.last_health_ms = now_ms()
        system = stats.get("system")
        if isinstance(system, dict) and isinstance(system.get("ram_free"), int):
            backend.ram_free = system["ram_free"]
        devices = stats.get("devices") or []
        if devices and isinstance(devices[0], dict):
            backend.vram_total = devices[0].get("vram_total")
            backend.vram_free = devices[0].get("vram_free")

    async def check_now(self) -> dict[str, Any]:
        """POST /api/pool/health-check: one whole round now."""
        await self.step()
        return self.describe()

    async def _check_hosts(self) -> None:
        """Ping each host; an unreachable one is marked down, skipped by placement, and its backends are lost.
        The containers of a live host are inspected: exited, out of memory or gone means lost."""
        for provider in self.providers:
            for host in provider.hosts:
                try:
                    await provider.ping(host.name)
                    if self.hosts_down.pop(host.name, None) is not None:
                        logger.info("host back host={}", host.name)
                        await self._clear_leftovers(provider, host.name)
                    await self._check_containers(provider, host.name)
                except DockerUnavailable as exc:
                    await self._host_down(host.name, str(exc))

    async def _check_containers(self, provider: Provider, host: str) -> None:
        for backend in [b for b in self.backends.values() if b.provider is provider and b.host == host
                        and b.spawned is not None and b.state != BackendState.STARTING]:
            reason = await provider.check(backend.spawned)  # type: ignore[arg-type]
            if reason is not None:
                await self._lose(backend, reason, replace=True)

    async def _host_down(self, host: str, error: str) -> None:
        if host not in self.hosts_down:
            logger.warning("host down host={} error={}", host, error)
        self.hosts_down[host] = error
        for backend in [b for b in self.backends.values() if b.managed and b.host == host
                        and b.state != BackendState.STARTING]:
            await self._lose(backend, f"its Docker host {host} is unreachable: {error}", replace=True)

    async def _clear_leftovers(self, provider: Provider, host: str) -> None:
        """A host that comes back may still hold the containers of backends given up for lost."""
        try:
            leftovers = await provider.leftovers()
        except DockerUnavailable:
            return
        for spawned in leftovers:
            if spawned.host == host and spawned.backend_id not in self.backends:
                await self._remove_quietly(provider, spawned)

    async def _lose(self, backend: Backend, reason: str, *, replace: bool) -> None:
        """A backend died: forget it, tell the tracker (its prompts go back to the queue), remove it."""
        logger.warning("backend lost backend={} reason={}", backend.id, reason.splitlines()[0])
        self._record_error(backend, reason)
        self.backends.pop(backend.id, None)
        if backend.managed:
            self.counters["lost"] += 1
        if replace and backend.managed:
            self._replacements += 1
        if self.on_lost is not None:
            await self.on_lost(backend, reason)
        if backend.provider and backend.spawned and backend.host not in self.hosts_down:
            await self._remove_quietly(backend.provider, backend.spawned)
        self.notify()

    async def _remove_quietly(self, provider: Provider, spawned: Spawned) -> None:
        try:
            await provider.remove(spawned)
        except ComfyartError as exc:
            logger.warning("removing backend failed backend={} error={}", spawned.backend_id, exc)

    def _record_error(self, backend: Backend, reason: str) -> None:
        backend.state = BackendState.ERROR
        backend.error = reason
        self.recent_errors.append({"id": backend.id, "host": backend.host, "error": reason, "at_ms": now_ms()})

    # ------------------------------------------------------------------ recycling and drains
    async def _recycle(self) -> None:
        now = time.monotonic()
        for backend in [b for b in self.backends.values() if b.managed and b.state != BackendState.STARTING]:
            if backend.mode == BackendMode.DRAINING:
                continue
            verdict = recycle_reason(
                tasks_done=backend.tasks_done, age_s=now - backend.started,
                unhealthy_s=None if backend.unhealthy_since is None else now - backend.unhealthy_since,
                max_tasks=self.config.max_tasks, max_age_s=self.config.max_age_s,
                replace_unhealthy_after_s=self.config.replace_unhealthy_after_s)
            if verdict is None:
                continue
            how, why = verdict
            if how is Recycle.NOW:
                await self._lose(backend, f"replaced: {why}", replace=True)
            else:
                self._drain(backend, AfterDrain.RECYCLE, why)

    def _drain(self, backend: Backend, after: str, reason: str) -> None:
        if backend.mode != BackendMode.DRAINING:
            logger.info("draining backend={} then={} reason={}", backend.id, after, reason)
        backend.mode = BackendMode.DRAINING
        backend.after_drain = after
        backend.drain_reason = reason

    async def _finish_drains(self) -> None:
        for backend in list(self.backends.values()):
            if backend.mode != BackendMode.DRAINING or backend.prompts:
                continue
            after = backend.after_drain
            if after == AfterDrain.HOLD:
                continue
            logger.info("drained backend={} then={}", backend.id, after)
            self.backends.pop(backend.id, None)
            if after == AfterDrain.RECYCLE:
                self._replacements += 1
                self.counters["recycled"] += 1
            elif backend.managed:
                self.counters["stopped"] += 1
            if backend.provider is not None and backend.spawned is not None:
                await self._remove_quietly(backend.provider, backend.spawned)
            self.notify()

    # ------------------------------------------------------------------ scaling
    def _container_views(self, now: float) -> list[ContainerView]:
        views = []
        for backend in self.backends.values():
            if not backend.managed:
                continue
            if backend.mode == BackendMode.DRAINING and backend.after_drain != AfterDrain.SCALE_DOWN:
                continue  # on its way out (recycled, drained by hand): not part of the pool's size
            state = {BackendState.STARTING: ContainerState.STARTING,
                     BackendState.HEALTHY: ContainerState.HEALTHY}.get(backend.state, ContainerState.UNHEALTHY)
            idle = 0.0 if backend.mode == BackendMode.DISABLED else backend.idle_s(now)  # disabled: kept as is
            views.append(ContainerView(backend.id, state, backend.mode == BackendMode.DRAINING,
                                       len(backend.prompts), idle))
        return views

    async def _autoscale(self) -> None:
        if not self.providers:
            return
        now = time.monotonic()
        waiting = await self.waiting() if self.waiting is not None else 0
        statics = [b for b in self.backends.values() if not b.managed]
        observed = ScaleInput(
            queued=waiting, running=sum(len(b.prompts) for b in self.backends.values()),
            containers=tuple(self._container_views(now)),
            free_slots=sum(free_container_slots(self.host_views(p)) for p in self.providers),
            static_capacity=sum(1 for b in statics if b.state == BackendState.HEALTHY and b.accepting),
            since_scale_up_s=None if self._last_scale_up is None else now - self._last_scale_up,
            since_scale_down_s=None if self._last_scale_down is None else now - self._last_scale_down,
            replacements=self._replacements)
        decision = decide_scale(observed, self.limits())
        if decision.acts or self.last_decision is None or decision.reason != self.last_decision.reason:
            if decision.acts:
                logger.info("autoscale {}", decision.reason)
                self.recent_scaling.append({"reason": decision.reason, "start": decision.start,
                                            "drain": list(decision.drain), "at_ms": now_ms()})
            self.last_decision, self.last_decision_ms = decision, now_ms()
        for backend_id in decision.undrain:
            backend = self.backends[backend_id]
            backend.mode, backend.after_drain, backend.drain_reason = BackendMode.ACTIVE, None, None
        for backend_id in decision.drain:
            self._drain(self.backends[backend_id], AfterDrain.SCALE_DOWN, "idle: the load went down")
        if decision.drain:
            self._last_scale_down = now
        if decision.undrain:
            self.notify()
        if decision.start and now >= self._next_spawn_at:
            started = self._start_containers(decision.start)
            if started:
                self._last_scale_up = now
                self._replacements = max(0, self._replacements - started)
        if decision.desired <= sum(1 for c in observed.containers if not c.draining):
            self._replacements = 0  # nothing is owed to a pool that has what it wants

    def _start_containers(self, count: int) -> int:
        started = 0
        for _ in range(count):
            placed = self._place()
            if placed is None:
                break
            provider, placement = placed
            backend = self._reserve(provider, placement)
            assert self._tasks is not None
            self._tasks.create_task(self._launch(backend, provider, placement), name=f"launch {backend.id}")
            started += 1
        return started

    def _place(self) -> tuple | None:
        candidates: list[tuple] = []
        for provider in self.providers:
            placement = place_container(self.host_views(provider))
            if placement is not None:
                count = sum(1 for b in self.backends.values() if b.kind == provider.kind and b.host == placement.host)
                candidates.append((count, len(candidates), provider, placement))
        if not candidates:
            return None
        _, _, provider, placement = min(candidates, key=lambda c: (c[0], c[1]))
        return provider, placement

    def _reserve(self, provider: Provider, placement: Placement) -> Backend:
        host = next(h for h in provider.hosts if h.name == placement.host)
        url = f"http://{host.address}:{placement.port}"
        backend = Backend(f"{provider.kind}:{placement.host}:{placement.port}", provider.kind, placement.host, url,
                          ComfyClient(self.session, url, timeout_s=self.request_timeout_s), port=placement.port,
                          gpu=placement.gpu, provider=provider, task_limit=self.config.max_tasks, tags=host.tags,
                          weight=host.weight)
        self.backends[backend.id] = backend
        return backend

    async def _launch(self, backend: Backend, provider: Provider, placement: Placement) -> None:
        """Start one backend and wait until it answers /system_stats; on failure record why and remove it."""
        logger.info("starting backend={} gpu={}", backend.id, placement.gpu)
        try:
            backend.spawned = await provider.spawn(placement)
            backend.name = backend.spawned.name
            failure = await self._wait_until_up(backend, provider)
        except ContainerFailed as exc:
            failure = str(exc) + (f"; last log lines:\n{exc.last_logs}" if exc.last_logs else "")
        except ComfyartError as exc:
            failure = str(exc)
        if self.backends.get(backend.id) is not backend:
            return  # given up meanwhile (its host went down)
        if failure is None:
            self._spawn_failures = 0
            self.counters["started"] += 1
            backend.state = BackendState.HEALTHY
            backend.health = HealthCount(True)
            backend.started = backend.idle_since = time.monotonic()
            logger.info("backend up backend={} url={}", backend.id, redact_url(backend.url))
            self.notify()
            return
        logger.error("backend failed to start backend={} reason={}", backend.id, failure)
        self._record_error(backend, failure)
        self.backends.pop(backend.id, None)
        self._spawn_failures += 1
        self._next_spawn_at = time.monotonic() + min(SPAWN_BACKOFF_MAX_S,
                                                     self.config.health_interval_s * 2 ** self._spawn_failures)
        if backend.spawned is not None:
            await self._remove_quietly(provider, backend.spawned)

    async def _wait_until_up(self, backend: Backend, provider: Provider) -> str | None:
        assert backend.spawned is not None
        deadline = time.monotonic() + provider.startup_timeout_s
        while time.monotonic() < deadline:
            reason = await provider.check(backend.spawned)
            if reason is not None:
                return f"backend exited during start-up: {reason}"
            try:
                self._record_stats(backend, await backend.client.system_stats(timeout_s=STARTUP_PROBE_TIMEOUT_S))
                return None
            except BackendUnavailable:
                await asyncio.sleep(0.2)
        logs = await provider.logs(backend.spawned)
        return (f"did not answer /system_stats within {provider.startup_timeout_s:g} s"
                + (f"; last log lines:\n{logs}" if logs else ""))

    # ------------------------------------------------------------------ manual controls
    async def set_scale(self, changes: dict[str, int | None]) -> None:
        """POST /api/pool/scale: set ``min_containers``, ``max_containers`` or ``target`` at run time (None: back
        to the configured value; a field not given keeps its current override). Kept in Redis."""
        merged = ScaleOverride(**{**vars(self.override), **changes})
        wanted = self.limits(merged)
        low, high = wanted.min_containers, wanted.max_containers
        if low > high:
            raise InvalidInput(f"min_containers ({low}) exceeds max_containers ({high})")
        if merged.target is not None and not low <= merged.target <= high:
            raise InvalidInput(f"target {merged.target} is outside min_containers..max_containers ({low}..{high})")
        if self.store is not None:
            await self.store.set_scale_override(merged)
        self.override = merged
        self._last_scale_up = self._last_scale_down = None  # an explicit order is not held back by cooldowns
        await self.step()

    def drain(self, backend_id: str) -> Backend:
        backend = self.get(backend_id)
        self._drain(backend, AfterDrain.STOP if backend.managed else AfterDrain.HOLD, "drained through the API")
        return backend

    def recycle(self, backend_id: str) -> Backend:
        backend = self.get(backend_id)
        if not backend.managed:
            raise StateConflict(f"{backend_id} is a static backend: comfyart cannot restart it (drain or disable it)")
        self._drain(backend, AfterDrain.RECYCLE, "recycled through the API")
        return backend

    async def enable(self, backend_id: str) -> Backend:
        backend = self.get(backend_id)
        if backend.after_drain == AfterDrain.REMOVE:
            raise StateConflict(f"{backend_id} is being removed; register it again once it is gone")
        backend.mode, backend.after_drain, backend.drain_reason = BackendMode.ACTIVE, None, None
        self.notify()
        return backend

    def disable(self, backend_id: str) -> Backend:
        backend = self.get(backend_id)
        backend.mode, backend.after_drain, backend.drain_reason = BackendMode.DISABLED, None, "disabled"
        return backend

    async def register_static(self, static: StaticBackendConfig) -> tuple[Backend, bool]:
        """POST /api/pool/backends: a ComfyUI that announces itself. The same name and URL again is a no-op
        (announcing at every boot is fine; new tags and weight apply); another URL under a taken name is
        refused."""
        name, url = static.name, static.url
        backend = self.backends.get(f"static:{name}")
        if backend is not None:
            if backend.url != url:
                raise StateConflict(f"backend {name} is registered with {backend.url}; DELETE it first")
            if backend.after_drain == AfterDrain.REMOVE:
                raise StateConflict(f"backend {name} is being removed; register it again once it is gone")
            if backend.source == "api" and (backend.tags, backend.weight) != (frozenset(static.tags), static.weight):
                if self.store is not None:
                    await self.store.add_static(static)
                backend.tags, backend.weight = frozenset(static.tags), static.weight
            return backend, False
        if self.store is not None:
            await self.store.add_static(static)
        backend = self._add_static_backend(static, "api")
        await self._probe(backend)
        return backend, True

    async def deregister_static(self, name: str) -> Backend:
        """DELETE /api/pool/backends/{name}: no new work, then forgotten once its prompts are done."""
        backend = self.get(f"static:{name}")
        if backend.source != "api":
            raise StateConflict(f"backend {name} comes from the configuration file; remove it there, or disable it")
        if self.store is not None:
            await self.store.remove_static(name)
        self._drain(backend, AfterDrain.REMOVE, "deregistered through the API")
        await self._finish_drains()
        return backend

    # ------------------------------------------------------------------ shutdown and description
    async def shutdown(self) -> None:
        """Stop the local processes this run started; containers stay up and are adopted at the next start."""
        for backend in list(self.backends.values()):
            if backend.kind == "process" and backend.provider and backend.spawned:
                await backend.provider.remove(backend.spawned)
        for provider in self.providers:
            await provider.close()

    def describe(self) -> dict[str, Any]:
        hosts = []
        for provider in self.providers:
            for host, view in zip(provider.hosts, self.host_views(provider), strict=True):
                hosts.append({"name": host.name, "kind": provider.kind, "address": host.address,
                              "ports": list(host.ports), "gpus": list(host.gpus), "containers": view.containers,
                              "free_slots": free_container_slots([view]), "down": self.hosts_down.get(host.name)})
        limits = self.limits()
        decision = self.last_decision
        return {"hosts": hosts, "backends": [b.describe() for b in self.backends.values()],
                "recent_errors": list(self.recent_errors), "recent_scaling": list(self.recent_scaling),
                "counters": dict(self.counters),
                "autoscaler": None if decision is None else {
                    "desired": decision.desired, "start": decision.start, "drain": list(decision.drain),
                    "undrain": list(decision.undrain), "reason": decision.reason,
                    "limited_by": list(decision.limited_by), "at_ms": self.last_decision_ms},
                "config": {"min_containers": limits.min_containers, "max_containers": limits.max_containers,
                           "target": limits.target,
                           "tasks_per_container": limits.tasks_per_container,
                           "idle_timeout_s": limits.idle_timeout_s,
                           "overridden": {k: v for k, v in vars(self.override).items() if v is not None}}}
