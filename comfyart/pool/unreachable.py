"""Static backends out of reach. comfyart does not run them, so silence never removes one from the pool; but one whose
last ``unhealthy_threshold`` health checks failed (what makes a backend unhealthy), from which neither a good check
nor a WebSocket frame came for ``pool.static_lost_after_s`` (``policy.health`` decides), loses its prompts: they are
requeued elsewhere, as a dead container's are, and the backend stays, unhealthy and health-checked. Under a
partition it may still hold them: when it answers again, before it gets new work, those still queued are deleted
from its queue and the one it runs is interrupted. What it reports of them meanwhile is ignored: the book no longer
holds them, and the task store refuses to end an attempt that is not the task's current one. The prompts given up
are kept in memory: after a restart of comfyart a backend still out of reach may run them once more, to no effect on
their tasks."""
from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from loguru import logger

from comfyart.clock import now_ms
from comfyart.comfy import protocol
from comfyart.models import BackendState
from comfyart.policy.health import HealthCount, static_backend_lost
from comfyart.pool.backend import Backend
from comfyart.pool.registry import Pool

LostHandler = Callable[[Backend, str], Awaitable[None]]


def silent_s(backend: Backend, now: float) -> float:
    """How long nothing was heard from ``backend``: neither a good health check nor a frame on its WebSocket. An
    open socket alone is no sign of life: aiohttp's heartbeat (``comfy.websocket``) closes a dead peer's only some
    45 s after its last data, and it swallows the pongs, so ``heard`` cannot count them."""
    heard = backend.answered
    if backend.socket is not None:
        heard = max(heard, backend.socket.heard)
    return max(0.0, now - heard)


async def give_up_silent(pool: Pool, on_lost: LostHandler) -> None:
    """Every static backend out of reach for ``static_lost_after_s`` loses its prompts (``on_lost`` requeues
    them)."""
    now = time.monotonic()
    config = pool.config
    for backend in [b for b in pool.backends.values() if not b.managed]:
        silent = silent_s(backend, now)
        if static_backend_lost(failed_checks=backend.health.failures,
                               unhealthy_threshold=config.unhealthy_threshold, silent_s=silent,
                               holds_prompts=bool(backend.prompts), lost_after_s=config.static_lost_after_s):
            await give_up(pool, backend, f"unreachable for {silent:.0f} s: {backend.error or 'no answer'}", on_lost)


async def give_up(pool: Pool, backend: Backend, reason: str, on_lost: LostHandler) -> None:
    """Requeue the prompts of ``backend`` elsewhere and keep it, unhealthy, until it answers and lets go of them.
    Only the prompts that left the book are given up: should Redis fail half-way (``on_lost`` raises), the rest
    are still tracked on it, and the next round, finding it still out of reach, gives them up."""
    logger.warning("static backend unreachable, its prompts go elsewhere backend={} prompts={} reason={}",
                   backend.id, len(backend.prompts), reason)
    pool.recent_errors.append({"id": backend.id, "host": backend.host, "error": reason, "at_ms": now_ms()})
    backend.health = HealthCount(False, failures=backend.health.failures)
    if backend.state != BackendState.UNHEALTHY:
        backend.move_to(BackendState.UNHEALTHY)
        backend.unhealthy_since = time.monotonic()
    held = set(backend.prompts)
    try:
        await on_lost(backend, reason)
    finally:
        backend.given_up.update(held - backend.prompts.keys())
        pool.notify()


async def take_back(backend: Backend) -> None:
    """``backend`` answers again: of the prompts given up on it, delete those it still queues, then interrupt the
    one it runs (which keeps it unhealthy until it lets go: ``stuck_prompt``). Raises BackendUnavailable, the
    prompts kept for the next try."""
    if not backend.given_up:
        return
    queue = await backend.client.queue()
    running = [p for p in backend.given_up if protocol.prompt_running(queue, p)]
    queued = sorted(p for p in backend.given_up if protocol.prompt_in_queue(queue, p) and p not in running)
    for prompt_id in queued:  # first: interrupting first would start the next of them
        await backend.client.delete_queued(prompt_id)
    for prompt_id in running:
        await backend.client.interrupt(prompt_id)
        backend.stuck_prompt = prompt_id
    if queued or running:
        logger.info("took back prompts given up on backend={} deleted={} interrupted={}", backend.id, queued,
                    running)
    backend.given_up.clear()
