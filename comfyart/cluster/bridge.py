"""The event bridge: every replica's hub gets every task event, whichever replica's write made it (issue 24).

In a replicated store (``store.eventlog``) the scripts that change tasks append their events to the Redis stream
``P:events`` and publish nothing locally; ``EventBridge.run`` (a root loop on every replica) follows the stream with
XREAD BLOCK from the last id it saw and publishes each event on the replica's own ``EventHub``, the replica's own
writes included: one order everywhere, each event once per subscriber. When Redis stops answering it retries; once
back it resumes from its last id (``resume_from``), and when the stream no longer holds what followed that id
(trimmed past it, or Redis came back without it) every subscription is cut with a ``lagged`` event: its reader
re-reads the records and subscribes again, as for a slow subscriber.

A new task's event also wakes this replica's queue waiters (``TaskQueue.note_queued``): a task submitted to another
replica reaches the leader's dispatcher at once rather than at its next poll.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from loguru import logger

from comfyart.bus import Event, EventHub
from comfyart.errors import TransientError
from comfyart.store.eventlog import EventLog, id_after
from comfyart.store.lease import dedicated_client
from comfyart.store.queue import TaskQueue
from comfyart.store.stores import Stores

BLOCK_MS = 2000  # one XREAD waits this long for an entry, then asks again (under redis-py's 5 s socket timeout)
READ_COUNT = 512  # entries per XREAD
RETRY_S = 0.5  # after Redis failed to answer


@dataclass(frozen=True)
class Resume:
    """Where a reconnected bridge goes on from, and whether events were lost meanwhile."""

    after_id: str
    lost: bool


def resume_from(last_id: str, first_id: str | None, newest_id: str) -> Resume:
    """After a reconnect: go on after ``last_id`` while the stream still holds what follows it; else (its oldest
    entry ``first_id`` is newer than ``last_id``: trimmed past it, or lost and written anew; or its newest entry is
    older than ``last_id``: Redis came back without it) go on from the newest entry and say events were lost."""
    if id_after(last_id, newest_id):
        return Resume(newest_id, lost=True)
    if first_id is not None and last_id != "0-0" and id_after(first_id, last_id):
        return Resume(newest_id, lost=True)
    return Resume(last_id, lost=False)


def _raise_if_cancelled() -> None:
    """redis-py can answer a blocked XREAD that was cancelled (seen after a reconnect) with no entries instead of
    letting the CancelledError through: the loop would then read on for ever, holding up the shutdown."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def entry_ms(entry_id: str) -> int:
    return int(entry_id.partition("-")[0])


class EventBridge:
    """Follows ``P:events`` into ``hub`` (see the module docstring). ``last_id`` is read by ``build`` before any
    loop writes, so nothing committed after the daemon started is missed."""

    def __init__(self, log: EventLog, hub: EventHub, *, last_id: str, wake_queue: TaskQueue | None = None) -> None:
        self.log = log
        self.hub = hub
        self.last_id = last_id
        self._wake_queue = wake_queue
        self.connected = True  # false while Redis does not answer (``/readyz`` may say so)
        self.lag_s = 0.0  # the last event's age when it was published here (its id's time to now)
        self.events = 0  # published since start
        self.cuts = 0  # times the subscribers were cut because events were lost

    async def run(self) -> None:
        try:
            while True:
                try:
                    entries = await self.log.read(self.last_id, block_ms=BLOCK_MS, count=READ_COUNT)
                except TransientError as exc:
                    await self._reconnect(exc)
                    continue
                _raise_if_cancelled()
                for entry_id, event in entries:
                    self._publish(entry_id, event)
        finally:
            await self.log.redis.aclose()

    def _publish(self, entry_id: str, event: Event) -> None:
        self.last_id = entry_id
        self.events += 1
        self.lag_s = max(0.0, time.time() - entry_ms(entry_id) / 1000)
        self.hub.publish(event)
        if event.get("type") == "task" and event.get("previous") is None and self._wake_queue is not None:
            self._wake_queue.note_queued()

    async def _reconnect(self, exc: Exception) -> None:
        """Wait until Redis answers again, then resume (``resume_from``)."""
        if self.connected:
            logger.warning("event bridge lost Redis, retrying: {}", exc)
        self.connected = False
        while True:
            await asyncio.sleep(RETRY_S)
            try:
                first, newest = await self.log.first_id(), await self.log.last_id()
            except TransientError:
                continue
            break
        resume = resume_from(self.last_id, first, newest)
        if resume.lost:
            self.cuts += 1
            logger.warning("event bridge: events after {} are gone from the stream; subscribers re-read",
                           self.last_id)
            self.hub.cut_all("events lost while Redis was away: re-read the records")
        else:
            logger.info("event bridge reconnected, resuming after {}", self.last_id)
        self.last_id = resume.after_id
        self.connected = True


async def build(stores: Stores, hub: EventHub) -> EventBridge | None:
    """The bridge of a replicated store (None in one process: the stores publish on ``hub`` themselves). Call it
    before any loop starts; run ``EventBridge.run`` as a root loop of every replica."""
    if not stores.replicated:
        return None
    # its own connection: an XREAD BLOCK holds one for seconds, which the shared pool should not lend
    log = EventLog(dedicated_client(stores.client, 2), stores.keys)
    return EventBridge(log, hub, last_id=await log.last_id(), wake_queue=stores.queue)
