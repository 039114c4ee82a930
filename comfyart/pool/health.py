"""Health checks: every backend that is up is asked for /system_stats; ``policy.health`` turns the answers into
healthy and unhealthy; a backend that becomes healthy lists its nodes and models (``inventory``) before it is
given work. A backend that still runs a prompt that timed out stays unhealthy until it lets go of it; one
that answers again after its prompts were given up (``unreachable``) is rid of them first."""
from __future__ import annotations

import asyncio
import time

from loguru import logger

from comfyart.clock import now_ms
from comfyart.comfy import protocol
from comfyart.config.fleet import PoolConfig
from comfyart.errors import BackendUnavailable
from comfyart.models import BackendState
from comfyart.policy.health import after_health_check, probe_due
from comfyart.pool.backend import Backend
from comfyart.pool.inventory import Inventories
from comfyart.pool.registry import Pool
from comfyart.pool.unreachable import take_back
from comfyart.redact import redact_url


class HealthChecks:
    def __init__(self, pool: Pool, config: PoolConfig, inventories: Inventories | None = None) -> None:
        self.pool = pool
        self.config = config
        self.inventories = inventories or Inventories(pool, config)

    async def probe_all(self, *, every: bool = False) -> None:
        """Probe the backends that are up: each one due (``policy.health.probe_due``), or ``every`` one."""
        now = time.monotonic()
        probed = [b for b in self.pool.backends.values()
                  if b.state in (BackendState.HEALTHY, BackendState.UNHEALTHY) and (every or self._due(b, now))]
        await asyncio.gather(*(self.probe(b) for b in probed))

    def _due(self, backend: Backend, now: float) -> bool:
        return probe_due(healthy=backend.state == BackendState.HEALTHY,
                         must_answer=backend.stuck_prompt is not None or bool(backend.given_up),
                         heard_ago_s=None if backend.socket is None else now - backend.socket.heard,
                         answered_ago_s=now - backend.answered, interval_s=self.config.health_interval_s)

    async def probe(self, backend: Backend) -> None:
        error: str | None = None
        try:
            stats = await backend.client.system_stats(timeout_s=self.config.health_timeout_s)
            backend.answered = time.monotonic()
            await take_back(backend)  # prompts given up on it while it was out of reach: off it before new work
            if backend.stuck_prompt is not None:
                error = await self._still_stuck(backend)
        except BackendUnavailable as exc:
            error = str(exc)
        if self.pool.backends.get(backend.id) is not backend:
            return  # it left the pool while it was asked
        backend.last_health_ms = now_ms()
        was_healthy = backend.state == BackendState.HEALTHY
        backend.health = after_health_check(backend.health, error is None,
                                            unhealthy_threshold=self.config.unhealthy_threshold,
                                            healthy_threshold=self.config.healthy_threshold)
        if error is None:
            backend.record_stats(stats)
        else:
            backend.error = error
        if backend.health.healthy and not was_healthy:
            # what it can run, before it is given anything: read again each time it comes back (a restarted
            # ComfyUI may have other models and node packs)
            await self.inventories.read(backend)
            backend.move_to(BackendState.HEALTHY)
            backend.error = None
            backend.unhealthy_since = None
            backend.idle_since = time.monotonic()
            logger.info("backend healthy backend={} url={}", backend.id, redact_url(backend.url))
            self.pool.notify()
        elif not backend.health.healthy:
            if was_healthy:
                logger.warning("backend unhealthy backend={} error={}", backend.id, error)
            backend.move_to(BackendState.UNHEALTHY)
            if backend.unhealthy_since is None:
                backend.unhealthy_since = time.monotonic()

    @staticmethod
    async def _still_stuck(backend: Backend) -> str | None:
        """A prompt timed out here: the backend stays unhealthy while it still runs it (ComfyUI cannot interrupt a
        node that reports no progress)."""
        queue = await backend.client.queue()
        if protocol.prompt_running(queue, backend.stuck_prompt or ""):
            return f"still running prompt {backend.stuck_prompt}, which timed out"
        backend.stuck_prompt = None
        return None
