"""``GET /api/v2/jobs/{id}/events`` (API-V2.md §6.5): a job's live events as Server-Sent Events, every payload
made by ``shapes`` as ``GET /api/v2/jobs/{id}`` shows it, so the two always agree. What is sent when is
``stream``'s to decide; this module follows the bus (the task's changes and progress from the task store, its
previews from the tracker's own hub, heard only while a stream listens) and re-reads the record at each change.

A key holds at most ``api_v2.max_streams_per_key`` streams (429 ``too_many_streams``); another key's job is 404.
A stream ends after the job's terminal status, when its client goes (noticed at the next frame: a keepalive at the
latest), or when the daemon stops (uvicorn's graceful shutdown cancels it). A client too slow to take what the bus
sends it falls behind; its subscription is then cut off (a bounded buffer), and the stream re-reads the record and
subscribes again, so nothing waits on it and it misses nothing but progress and previews it had no time for."""
from __future__ import annotations

import time
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from comfyart.api.auth import Caller
from comfyart.api.deps import Services, ServicesDep, VisibleTask
from comfyart.api.v2.answers import V2Refused
from comfyart.api.v2.jobs import base_url, job_body
from comfyart.api.v2.stream import EventStream, StreamSlots, preview_data
from comfyart.bus import Event, Subscription
from comfyart.errors import NotFound
from comfyart.models import Task
from comfyart.tracker.prompts import Preview

KEEPALIVE_S = 15.0  # read when a stream opens: the SDK gives up on a stream silent for 45 s
BUFFER_EVENTS = 256  # a stream's events not yet sent (previews among them): past this it catches up from the record
RETRY_AFTER_S = 5
PROGRESS_FIELDS = ("progress", "node", "node_step", "node_max")
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"}

router = APIRouter()


class TooManyStreams(V2Refused):
    retry_after_s = RETRY_AFTER_S  # read by the v2 answer's Retry-After

    def __init__(self, limit: int) -> None:
        super().__init__("too_many_streams", f"this key holds {limit} event streams open already; close one or "
                         "retry later", status=429)


class JobFollower:
    """One stream's view of its job: the record as last read, the subscription that tells of changes, and the
    key's stream slot it holds. Both are given back by ``close``, or when it is dropped unclosed (a response that
    never started: its generator never ran)."""

    def __init__(self, task: Task, services: Services, base: str, key: str) -> None:
        self.task, self.services, self.base = task, services, base
        self._held = [self.subscribe()]  # the one subscription open now, for the finalizer too
        unwatch = services.front.watch_previews(task.id)  # replicated: previews made by another replica too
        self._closer = weakref.finalize(self, _give_back, self._held, services.v2_streams, key, unwatch)

    @property
    def subscription(self) -> Subscription:
        return self._held[0]

    def subscribe(self) -> Subscription:
        task_id = self.task.id

        def wanted(event: Event) -> bool:
            return event.get("id") == task_id and event.get("type") in ("task", "progress", "preview")

        return self.services.store.events.subscribe(wanted, capacity=BUFFER_EVENTS,
                                                    also=(self.services.tracker.previews,))

    def close(self) -> None:
        self._closer()  # once: a second call does nothing

    async def job(self) -> dict[str, Any]:
        """The job as GET /api/v2/jobs/{id} answers it, its place in the queue included while it waits."""
        return await job_body(self.task, self.base, self.services)

    async def reread(self) -> bool:
        """The record as it is now; False when it is gone."""
        try:
            self.task = await self.services.store.get(self.task.id)
        except NotFound:
            return False
        return True

    def latest_preview(self) -> Preview | None:
        return self.services.tracker.book.latest_preview(self.task.id, self.task.prompt_id)

    async def catch_up(self) -> bool:
        """After the subscription was cut off (the client fell behind): subscribe again, then re-read."""
        self.subscription.close()
        self._held[0] = self.subscribe()
        return await self.reread()


def _give_back(held: list[Subscription], slots: StreamSlots, key: str, unwatch: Callable[[], None]) -> None:
    held[0].close()
    slots.give_back(key)
    unwatch()


async def _frames(follower: JobFollower, keepalive_s: float) -> AsyncIterator[bytes]:
    stream = EventStream(keepalive_s=keepalive_s, last_sent=time.monotonic())
    now = time.monotonic()
    for sent in stream.on_job(await follower.job(), now):
        yield sent
    latest = follower.latest_preview()
    if latest is not None:
        for sent in stream.on_preview(preview_data(latest.payload, latest.node), now):
            yield sent
    while not stream.ended:
        event = await follower.subscription.get(stream.wait_s(time.monotonic()))
        now = time.monotonic()
        if (event is None and follower.subscription.closed) or (event is not None and event["type"] == "lagged"):
            if not await follower.catch_up():
                return
            sending = stream.on_job(await follower.job(), now)
        elif event is None:
            sending = stream.on_time(now)
        elif event["type"] == "preview":
            preview: Preview = event["preview"]
            sending = stream.on_preview(preview_data(preview.payload, preview.node), now)
        elif event["type"] == "progress":
            follower.task = follower.task.model_copy(update={k: event[k] for k in PROGRESS_FIELDS if k in event})
            sending = stream.on_job(await follower.job(), now)
        else:  # a change of the record: read it whole (its outputs, its error), as GET /jobs/{id} does
            if not await follower.reread():
                return
            sending = stream.on_job(await follower.job(), now)
        for sent in sending:
            yield sent


async def _closing(follower: JobFollower, keepalive_s: float) -> AsyncIterator[bytes]:
    try:
        async for sent in _frames(follower, keepalive_s):
            yield sent
    finally:
        follower.close()


@router.get("/api/v2/jobs/{task_id}/events", response_model=None,
            responses={200: {"content": {"text/event-stream": {}}}})
async def job_events(task: VisibleTask, principal: Caller, request: Request,
                     services: ServicesDep) -> StreamingResponse:
    """The job's live events: ``status`` (a snapshot first, then each change; the terminal one last),
    ``progress``, ``preview`` and ``output``, with ``: keepalive`` comments while nothing happens."""
    limit = services.api_v2.max_streams_per_key
    if not services.v2_streams.take(principal.id, limit):
        raise TooManyStreams(limit)
    follower = JobFollower(task, services, base_url(request, services), principal.id)
    # subscribed before the record is read again: no change falls between the two
    if not await follower.reread():
        follower.close()
        raise NotFound(f"no job {task.id}")
    return StreamingResponse(_closing(follower, KEEPALIVE_S), media_type="text/event-stream", headers=HEADERS)
