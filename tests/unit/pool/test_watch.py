"""The cluster watch: ``pool``, ``autoscaler`` and ``queue`` events, each published once per change."""
from __future__ import annotations

from typing import Any

from comfyart.bus import EventHub
from comfyart.pool.watch import ClusterWatch


class Cluster:
    """What the watch polls, changed by the test between two polls."""

    def __init__(self) -> None:
        self.backends: dict[str, dict[str, Any]] = {"b1": {"status": "healthy", "mode": "active", "inflight": 0}}
        self.decision: dict[str, Any] | None = None
        self.depth = {"queued": 0, "submitted": 0, "running": 0}

    async def queue_depth(self) -> dict[str, int]:
        return dict(self.depth)

    def watch(self, hub: EventHub) -> ClusterWatch:
        return ClusterWatch(hub, pool_summary=lambda: {k: dict(v) for k, v in self.backends.items()},
                            queue_depth=self.queue_depth, autoscaler=lambda: self.decision)


async def drained(subscription) -> list[dict[str, Any]]:
    events = []
    while (event := await subscription.get(0)) is not None:
        events.append(event)
    return events


async def test_a_new_autoscaler_decision_is_an_event_even_when_no_backend_changed():
    hub, cluster = EventHub(), Cluster()
    watch = cluster.watch(hub)
    with hub.subscribe() as events:
        await watch.publish_changes()
        assert [e["type"] for e in await drained(events)] == ["pool", "queue"]
        await watch.publish_changes()
        assert await drained(events) == []  # nothing changed: nothing published (no decision yet either)

        cluster.decision = {"desired": 2, "reason": "load 1 wants 1, bounded to 2; 2 up: steady", "at_ms": 1}
        await watch.publish_changes()
        assert await drained(events) == [{"type": "autoscaler", **cluster.decision}]
        await watch.publish_changes()
        assert await drained(events) == []

        # the load went: the backends are as they were, the decision is not
        cluster.decision = {"desired": 2, "reason": "load 0 wants 0, bounded to 2; 2 up: steady", "at_ms": 2}
        cluster.depth = {"queued": 0, "submitted": 0, "running": 0}
        await watch.publish_changes()
        assert await drained(events) == [{"type": "autoscaler", **cluster.decision}]

        cluster.backends["b1"]["inflight"] = 1
        cluster.depth = {"queued": 0, "submitted": 0, "running": 1}
        await watch.publish_changes()
        assert [e["type"] for e in await drained(events)] == ["pool", "queue"]
