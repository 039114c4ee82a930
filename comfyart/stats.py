"""Queue depth and throughput over time, for the dashboard's charts (``GET /api/stats``).

Every ``interval_s`` one sample: the queue's depth by state (queued, submitted, running) and how many tasks reached
each final status since the last sample (followed from the task events, so nothing is read back per task). Samples
are kept in Redis (``store.stats``, about 100 bytes each), so the charts survive a restart of the daemon.
"""
from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from loguru import logger

from comfyart.bus import Event, EventHub
from comfyart.clock import now_ms
from comfyart.errors import TransientError
from comfyart.models import FINAL_STATUSES
from comfyart.store.queue import TaskQueue
from comfyart.store.stats import StatsSamples

ENDED = tuple(status.value for status in FINAL_STATUSES)


def is_ending(event: Event) -> bool:
    """A task event that moves a task into a final status (not a field written to an ended one)."""
    return event.get("type") == "task" and event.get("status") in ENDED and event.get("previous") != event.get("status")


def samples_within(samples: list[dict[str, Any]], now_ms: int, window_s: float) -> list[dict[str, Any]]:
    """The samples of the last ``window_s``, oldest first (they are kept newest first)."""
    since = now_ms - window_s * 1000
    return [s for s in reversed(samples) if isinstance(s, dict) and s.get("t", 0) >= since]


class StatsHistory:
    def __init__(self, queue: TaskQueue, samples: StatsSamples, events: EventHub, *, interval_s: float,
                 keep_s: float) -> None:
        """``interval_s`` and ``keep_s``: the ``dashboard`` section's ``stats_interval_s`` and ``stats_keep_s``."""
        self.queue = queue
        self.samples = samples
        self.events = events
        self.interval_s = interval_s
        self.keep = max(1, int(keep_s / interval_s))
        self._ended: Counter[str] = Counter()  # final statuses reached since the last sample written

    def observe(self, event: Event) -> None:
        if is_ending(event):
            self._ended[event["status"]] += 1

    async def sample(self) -> dict[str, Any]:
        """Write one sample; the counts it carries start again from zero. A Redis error leaves them for the next."""
        sample: dict[str, Any] = {"t": now_ms(), **await self.queue.depth()}
        sample.update({status: self._ended[status] for status in ENDED})
        await self.samples.add(sample, keep=self.keep)
        self._ended.subtract({status: sample[status] for status in ENDED})
        return sample

    async def read(self, window_s: float) -> list[dict[str, Any]]:
        wanted = min(self.keep, int(window_s / self.interval_s) + 2)
        return samples_within(await self.samples.latest(wanted), now_ms(), window_s)

    async def run(self) -> None:
        """Follow the task events and write a sample every ``interval_s``, the first one at once, until cancelled."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        self._ended.clear()  # a leader's new term: counts of ends from the first sample of its own
        while True:  # a subscription cut off as lagged loses some counts, and subscribes again
            with self.events.subscribe(is_ending, capacity=100_000) as subscription:
                while not subscription.closed:
                    wait = next_at - loop.time()
                    if wait <= 0:
                        try:
                            await self.sample()
                        except TransientError as exc:
                            logger.warning("stats sample skipped: {}", exc)
                        next_at = max(next_at + self.interval_s, loop.time())
                        continue
                    event = await subscription.get(wait)
                    if event is not None:
                        self.observe(event)
