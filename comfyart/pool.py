"""The pool of ComfyUI backends: static URLs plus what the providers spawn. One loop health-checks them,
notices dead containers, and keeps ``min_containers`` running; start-ups run as tasks the loop owns.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Deque, Dict, List, Optional, Sequence

import aiohttp
from loguru import logger

from .comfy.client import ComfyClient
from .config import PoolConfig, StaticBackendConfig
from .errors import BackendUnavailable, ComfyartError, ContainerFailed, DockerUnavailable
from .models import BackendState
from .policy import BackendLoad, HostView, Placement, containers_to_start, place_container
from .providers.base import Provider, Spawned

UNHEALTHY_AFTER_FAILURES = 3
STARTUP_PROBE_TIMEOUT_S = 2.0
SPAWN_BACKOFF_MAX_S = 60.0


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Backend:
    id: str
    kind: str  # "docker", "process" or "static"
    host: str
    url: str
    client: ComfyClient
    port: Optional[int] = None
    gpu: Optional[int] = None
    name: str = ""
    state: BackendState = BackendState.STARTING
    spawned: Optional[Spawned] = None
    provider: Optional[Provider] = None
    prompts: Dict[str, str] = field(default_factory=dict)  # prompt id -> task id, in flight here
    tasks_done: int = 0
    health_failures: int = 0
    last_health_ms: Optional[int] = None
    vram_total: Optional[int] = None
    vram_free: Optional[int] = None
    error: Optional[str] = None
    created_ms: int = field(default_factory=now_ms)

    @property
    def managed(self) -> bool:
        return self.kind != "static"

    def load(self) -> BackendLoad:
        return BackendLoad(self.id, self.state == BackendState.HEALTHY, len(self.prompts), self.vram_free)

    def describe(self) -> Dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "name": self.name, "host": self.host, "url": self.url,
                "port": self.port, "gpu": self.gpu, "status": self.state.value, "inflight": len(self.prompts),
                "tasks_done": self.tasks_done, "last_health_check_ms": self.last_health_ms,
                "vram_total": self.vram_total, "vram_free": self.vram_free, "error": self.error,
                "created_ms": self.created_ms}


LostHandler = Callable[[Backend, str], Awaitable[None]]


class Pool:
    def __init__(self, *, config: PoolConfig, providers: Sequence[Provider],
                 static_backends: Sequence[StaticBackendConfig], session: aiohttp.ClientSession,
                 request_timeout_s: float = 30.0, adopt_leftovers: bool = True) -> None:
        self.config = config
        self.providers = list(providers)
        self.static_backends = list(static_backends)
        self.session = session
        self.request_timeout_s = request_timeout_s
        self.adopt_leftovers = adopt_leftovers
        self.backends: Dict[str, Backend] = {}
        self.recent_errors: Deque[Dict[str, Any]] = deque(maxlen=20)
        self.hosts_down: Dict[str, str] = {}
        self.ready = asyncio.Event()  # set once leftovers are handled and static backends listed
        self.on_lost: Optional[LostHandler] = None
        self._changed = asyncio.Condition()
        self._spawn_failures = 0
        self._next_spawn_at = 0.0
        self._tasks: Optional[asyncio.TaskGroup] = None

    # ------------------------------------------------------------------ views
    def loads(self) -> List[BackendLoad]:
        return [b.load() for b in self.backends.values()]

    def healthy(self) -> List[Backend]:
        return [b for b in self.backends.values() if b.state == BackendState.HEALTHY]

    def host_views(self, provider: Provider) -> List[HostView]:
        views = []
        for host in provider.hosts:
            mine = [b for b in self.backends.values() if b.kind == provider.kind and b.host == host.name]
            views.append(HostView(host.name, host.ports, host.gpus, frozenset(b.port for b in mine if b.port),
                                  frozenset(b.gpu for b in mine if b.gpu is not None), len(mine),
                                  available=host.name not in self.hosts_down))
        return views

    async def notify(self) -> None:
        """Wake whoever waits for the pool to change (a free slot, a new backend)."""
        async with self._changed:
            self._changed.notify_all()

    async def wait_changed(self, timeout_s: float) -> None:
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait(), timeout_s)
            except TimeoutError:
                pass

    # ------------------------------------------------------------------ loop
    async def run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            self._tasks = tasks
            await self._start()
            while True:
                await self.step()
                await asyncio.sleep(self.config.health_interval_s)

    async def _start(self) -> None:
        for static in self.static_backends:
            backend = Backend(f"static:{static.name}", "static", "static", static.url,
                              ComfyClient(self.session, static.url, timeout_s=self.request_timeout_s), name=static.name,
                              state=BackendState.UNHEALTHY)  # healthy once it answers a probe
            self.backends[backend.id] = backend
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
        return Backend(spawned.backend_id, spawned.kind, spawned.host, spawned.url,
                       ComfyClient(self.session, spawned.url, timeout_s=self.request_timeout_s),
                       port=spawned.port, gpu=spawned.gpu, name=spawned.name, spawned=spawned, provider=provider)

    async def step(self) -> None:
        """One pass: probe every backend, drop dead containers, start containers up to min_containers."""
        await self._probe_all()
        await self._check_liveness()
        self._ensure_minimum()

    async def _probe_all(self) -> None:
        probed = [b for b in self.backends.values() if b.state in (BackendState.HEALTHY, BackendState.UNHEALTHY)]
        await asyncio.gather(*(self._probe(b) for b in probed))

    async def _probe(self, backend: Backend) -> None:
        try:
            stats = await backend.client.system_stats(timeout_s=self.config.health_timeout_s)
        except BackendUnavailable as exc:
            backend.health_failures += 1
            backend.last_health_ms = now_ms()
            backend.error = str(exc)
            if backend.health_failures >= UNHEALTHY_AFTER_FAILURES and backend.state == BackendState.HEALTHY:
                backend.state = BackendState.UNHEALTHY
                logger.warning("backend unhealthy backend={} error={}", backend.id, exc)
            return
        self._record_stats(backend, stats)
        if backend.state != BackendState.HEALTHY:
            backend.state = BackendState.HEALTHY
            backend.error = None
            logger.info("backend healthy backend={} url={}", backend.id, backend.url)
            await self.notify()

    @staticmethod
    def _record_stats(backend: Backend, stats: Dict[str, Any]) -> None:
        backend.health_failures = 0
        backend.last_health_ms = now_ms()
        devices = stats.get("devices") or []
        if devices and isinstance(devices[0], dict):
            backend.vram_total = devices[0].get("vram_total")
            backend.vram_free = devices[0].get("vram_free")

    async def _check_liveness(self) -> None:
        for backend in list(self.backends.values()):
            if backend.spawned is None or backend.provider is None or backend.state == BackendState.STARTING:
                continue
            try:
                reason = await backend.provider.check(backend.spawned)
                self.hosts_down.pop(backend.host, None)
            except DockerUnavailable as exc:
                self.hosts_down[backend.host] = str(exc)
                continue
            if reason is not None:
                await self._lose(backend, reason)

    async def _lose(self, backend: Backend, reason: str) -> None:
        """A managed backend died: forget it, tell the tracker (its prompts go back to the queue), remove it."""
        logger.warning("backend lost backend={} reason={}", backend.id, reason.splitlines()[0])
        self._record_error(backend, reason)
        self.backends.pop(backend.id, None)
        if self.on_lost is not None:
            await self.on_lost(backend, reason)
        if backend.provider and backend.spawned:
            try:
                await backend.provider.remove(backend.spawned)
            except ComfyartError as exc:
                logger.warning("removing lost backend failed backend={} error={}", backend.id, exc)
        await self.notify()

    def _record_error(self, backend: Backend, reason: str) -> None:
        backend.state = BackendState.ERROR
        backend.error = reason
        self.recent_errors.append({"id": backend.id, "host": backend.host, "error": reason, "at_ms": now_ms()})

    def _ensure_minimum(self) -> None:
        if not self.providers or time.monotonic() < self._next_spawn_at:
            return
        active = sum(1 for b in self.backends.values() if b.managed)
        wanted = containers_to_start(active=active, min_containers=self.config.min_containers,
                                     max_containers=self.config.max_containers, free_slots=self.config.max_containers)
        for _ in range(wanted):
            placed = self._place()
            if placed is None:
                break
            provider, placement = placed
            backend = self._reserve(provider, placement)
            assert self._tasks is not None
            self._tasks.create_task(self._launch(backend, provider, placement), name=f"launch {backend.id}")

    def _place(self) -> Optional[tuple]:
        candidates: List[tuple] = []
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
        address = next(h.address for h in provider.hosts if h.name == placement.host)
        url = f"http://{address}:{placement.port}"
        backend = Backend(f"{provider.kind}:{placement.host}:{placement.port}", provider.kind, placement.host, url,
                          ComfyClient(self.session, url, timeout_s=self.request_timeout_s), port=placement.port,
                          gpu=placement.gpu, provider=provider)
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
        if failure is None:
            self._spawn_failures = 0
            backend.state = BackendState.HEALTHY
            logger.info("backend up backend={} url={}", backend.id, backend.url)
            await self.notify()
            return
        logger.error("backend failed to start backend={} reason={}", backend.id, failure)
        self._record_error(backend, failure)
        self.backends.pop(backend.id, None)
        self._spawn_failures += 1
        self._next_spawn_at = time.monotonic() + min(SPAWN_BACKOFF_MAX_S,
                                                     self.config.health_interval_s * 2 ** self._spawn_failures)
        if backend.spawned is not None:
            try:
                await provider.remove(backend.spawned)
            except ComfyartError as exc:
                logger.warning("cleanup after failed start failed backend={} error={}", backend.id, exc)

    async def _wait_until_up(self, backend: Backend, provider: Provider) -> Optional[str]:
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

    async def shutdown(self) -> None:
        """Stop the local processes this run started; containers stay up and are adopted at the next start."""
        for backend in list(self.backends.values()):
            if backend.kind == "process" and backend.provider and backend.spawned:
                await backend.provider.remove(backend.spawned)
        for provider in self.providers:
            await provider.close()

    def describe(self) -> Dict[str, Any]:
        hosts = []
        for provider in self.providers:
            for host, view in zip(provider.hosts, self.host_views(provider), strict=True):
                hosts.append({"name": host.name, "kind": provider.kind, "address": host.address,
                              "ports": list(host.ports), "gpus": list(host.gpus), "containers": view.containers,
                              "down": self.hosts_down.get(host.name)})
        return {"hosts": hosts, "backends": [b.describe() for b in self.backends.values()],
                "recent_errors": list(self.recent_errors),
                "config": {"min_containers": self.config.min_containers,
                           "max_containers": self.config.max_containers, "max_inflight": self.config.max_inflight}}
