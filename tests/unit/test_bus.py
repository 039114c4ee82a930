"""The event hub (bus): subscribers get what they filter, and a slow one is cut off."""
from __future__ import annotations

import asyncio

from comfyart.bus import EventHub


async def test_subscribers_get_what_they_filter_and_a_slow_one_is_cut_off():
    hub = EventHub()
    assert not hub.listening
    with hub.subscribe(lambda e: e["id"] == "a") as only_a, hub.subscribe(capacity=2) as small:
        for i in range(3):
            hub.publish({"type": "task", "id": "a" if i != 1 else "b", "n": i})
        assert [await only_a.get(0), await only_a.get(0)] == [{"type": "task", "id": "a", "n": 0},
                                                              {"type": "task", "id": "a", "n": 2}]
        assert await only_a.get(0.01) is None
        assert (await small.get(0))["type"] == "lagged" and small.closed
        assert await small.get(0) is None
        hub.publish({"type": "task", "id": "a", "n": 9})
        assert [e async for e in _take(only_a, 1)] == [{"type": "task", "id": "a", "n": 9}]
    assert not hub.listening


async def _take(subscription, count):
    for _ in range(count):
        yield await asyncio.wait_for(subscription.__anext__(), 1)
