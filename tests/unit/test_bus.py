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


async def test_one_subscription_takes_the_events_of_several_hubs_and_leaves_them_all():
    tasks, previews = EventHub(), EventHub()
    with tasks.subscribe(lambda e: e["id"] == "a", also=(previews,)) as both:
        assert tasks.listening and previews.listening
        tasks.publish({"type": "task", "id": "a"})
        previews.publish({"type": "preview", "id": "b"})
        previews.publish({"type": "preview", "id": "a"})
        assert [await both.get(0), await both.get(0)] == [{"type": "task", "id": "a"}, {"type": "preview", "id": "a"}]
    assert not tasks.listening and not previews.listening
    lagging = tasks.subscribe(capacity=1, also=(previews,))
    previews.publish({"type": "preview", "id": "a"})
    previews.publish({"type": "preview", "id": "a"})
    assert (await lagging.get(0))["type"] == "lagged"
    assert not tasks.listening and not previews.listening  # cut off from both
