"""Live ``pool``, ``autoscaler`` and ``queue`` events for the event streams, polled while anyone listens."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from comfyart.bus import EventHub
from comfyart.errors import TransientError
from comfyart.pool.registry import Pool

WATCH_INTERVAL_S = 1.0


class ClusterWatch:
    """Publishes ``pool`` (a backend's status, mode or load changed), ``autoscaler`` (its last decision changed)
    and ``queue`` (depth changed) events, polling the pool and the store once a second while anyone listens: the
    pool changes on every finished prompt, far too often to publish each change. The autoscaler decides apart from
    any backend change (a second after the load moves), so its decision has events of its own."""

    def __init__(self, hub: EventHub, *, pool_summary: Callable[[], dict[str, dict[str, Any]]],
                 queue_depth: Callable[[], Awaitable[dict[str, int]]],
                 autoscaler: Callable[[], dict[str, Any] | None] = lambda: None,
                 interval_s: float = WATCH_INTERVAL_S) -> None:
        self.hub = hub
        self.pool_summary = pool_summary
        self.queue_depth = queue_depth
        self.autoscaler = autoscaler
        self.interval_s = interval_s
        self._backends: dict[str, dict[str, Any]] = {}
        self._decision: dict[str, Any] | None = None
        self._depth: dict[str, int] = {}

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            if self.hub.listening:
                await self.publish_changes()

    async def publish_changes(self) -> None:
        backends = self.pool_summary()
        for backend_id, summary in backends.items():
            if self._backends.get(backend_id) != summary:
                self.hub.publish({"type": "pool", "backend": backend_id, **summary})
        for backend_id in self._backends.keys() - backends.keys():
            self.hub.publish({"type": "pool", "backend": backend_id, "status": "removed"})
        self._backends = backends
        decision = self.autoscaler()
        if decision is not None and decision != self._decision:
            self.hub.publish({"type": "autoscaler", **decision})
        self._decision = decision
        try:
            depth = await self.queue_depth()
        except TransientError:  # a Redis hiccup skips one tick: the next one publishes the change
            return
        if depth != self._depth:
            self._depth = depth
            self.hub.publish({"type": "queue", **depth})


def pool_summary(pool: Pool) -> dict[str, dict[str, Any]]:
    """Each backend's status, mode and prompts in flight (a standby's: the leader's, mirrored)."""
    return {b.id: {"status": b.state.value, "mode": b.mode.value, "inflight": len(b.prompts)}
            for b in pool.backends.values()}
