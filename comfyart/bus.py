"""Live events inside one daemon: task transitions and progress (published by the task store and the queue), pool
changes and queue depth (published by ``pool.watch.ClusterWatch``). The API's event streams, the ComfyUI API and the
webhook sender read them.

Publishing never waits and costs nothing without subscribers. A subscriber that falls ``capacity`` events
behind is cut off: its stream ends with a ``lagged`` event, so one slow client can never hold the daemon or make it
buffer without bound; it re-reads the records and subscribes again.
"""
from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Any

Event = dict[str, Any]
Accepts = Callable[[Event], bool]

DEFAULT_CAPACITY = 1000


def _everything(event: Event) -> bool:
    return True


class Subscription:
    """An async iterator of the events its filter accepts, from the moment it was made."""

    def __init__(self, hubs: tuple[EventHub, ...], accepts: Accepts, capacity: int) -> None:
        self._hubs = hubs
        self.accepts = accepts
        self._capacity = capacity
        self._events: collections.deque[Event] = collections.deque()
        self._arrived = asyncio.Event()
        self.lagged = False
        self.closed = False

    def offer(self, event: Event) -> None:
        if self.closed or not self.accepts(event):
            return
        if len(self._events) >= self._capacity:
            self.lagged = True
            self._events.clear()
            self._events.append({"type": "lagged", "detail": f"more than {self._capacity} events behind"})
            self._leave()
        else:
            self._events.append(event)
        self._arrived.set()

    async def get(self, timeout_s: float | None = None) -> Event | None:
        """The next event; None after ``timeout_s`` without one, or once the subscription was cut off and drained."""
        while not self._events:
            if self.closed:
                return None
            self._arrived.clear()
            try:
                async with asyncio.timeout(timeout_s):
                    await self._arrived.wait()
            except TimeoutError:
                return None
        return self._events.popleft()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        event = await self.get()
        if event is None:
            raise StopAsyncIteration
        return event

    def close(self) -> None:
        self._leave()
        self._arrived.set()

    def cut(self, detail: str) -> None:
        """End the subscription with a ``lagged`` event: what it had not read yet is dropped, its reader re-reads
        the records and subscribes again (events were lost upstream: ``EventHub.cut_all``)."""
        if self.closed:
            return
        self.lagged = True
        self._events.clear()
        self._events.append({"type": "lagged", "detail": detail})
        self._leave()
        self._arrived.set()

    def _leave(self) -> None:
        self.closed = True
        for hub in self._hubs:
            hub._subscribers.discard(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class EventHub:
    def __init__(self) -> None:
        self._subscribers: set[Subscription] = set()

    @property
    def listening(self) -> bool:
        return bool(self._subscribers)

    @property
    def subscriptions(self) -> int:
        """How many subscriptions are open: each ends when its stream does (see ``subscribe``)."""
        return len(self._subscribers)

    def publish(self, event: Event) -> None:
        for subscriber in list(self._subscribers):
            subscriber.offer(event)

    def cut_all(self, detail: str) -> None:
        """Cut every subscription (``Subscription.cut``): the events they would have had are gone (a replica's
        bridge found the Redis stream trimmed or lost past what it had read)."""
        for subscriber in list(self._subscribers):
            subscriber.cut(detail)

    def subscribe(self, accepts: Accepts = _everything, *, capacity: int = DEFAULT_CAPACITY,
                  also: tuple[EventHub, ...] = ()) -> Subscription:
        """Use as a context manager, so a stream that ends for any reason unsubscribes. ``also``: other hubs whose
        events the same subscription takes, in the order they were published (e.g. the tracker's previews, a hub
        of their own so that nobody else pays for them)."""
        hubs = (self, *also)
        subscription = Subscription(hubs, accepts, capacity)
        for hub in hubs:
            hub._subscribers.add(subscription)
        return subscription
