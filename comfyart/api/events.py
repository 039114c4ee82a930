"""comfyart's own live events: ``GET /api/tasks/{id}/events`` (Server-Sent Events of one task, until it ends) and
the WebSocket ``/api/events`` (tasks, progress, pool changes and queue depth). A client key hears of its own tasks
only, and of the queue's depth; pool events are for admins."""
from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from fastapi.sse import EventSourceResponse, format_sse_event

from comfyart.api.auth import Caller
from comfyart.api.deps import ServicesDep
from comfyart.auth import Principal, can_see
from comfyart.bus import Event, Subscription
from comfyart.errors import NotFound
from comfyart.models import FINAL_STATUSES, Task
from comfyart.store.tasks import TaskStore

KEEPALIVE_S = 15.0
TASK_EVENTS = ("task", "progress")
ADMIN_EVENTS = ("pool", "autoscaler")  # what the pool does is for admins only


def snapshot(task: Task) -> Event:
    """A task's record as the first event of a stream (its graph and history left out)."""
    return {"type": "task", "snapshot": True, **task.model_dump(mode="json", exclude={"prompt", "history", "params"})}


def _ids(raw: str | None) -> set[str] | None:
    if not raw:
        return None
    return {part for part in raw.split(",") if part}


# Each stream subscribes before it reads the records it starts with, so no change falls between the two. A stream
# that falls too far behind gets a ``lagged`` event and ends (the WebSocket closes with 1013): re-read and reconnect.
router = APIRouter()


@router.get("/api/tasks/{task_id}/events", response_model=None,
            responses={200: {"content": {"text/event-stream": {}}}})
async def task_events(task_id: str, principal: Caller, services: ServicesDep) -> EventSourceResponse:
    """Server-Sent Events of one task: its record first, then each change (``task``, ``progress``); the
    stream ends after the task's final status. (EventSource cannot send headers: ``?token=KEY`` works.)"""
    store = services.store
    subscription = store.events.subscribe(lambda e: e.get("id") == task_id and e.get("type") in TASK_EVENTS)
    try:
        task = await store.get(task_id)
        if not can_see(principal, task.owner):
            raise NotFound(f"no task {task_id}")
    except BaseException:
        subscription.close()
        raise
    return EventSourceResponse(_task_stream(task, subscription))


async def _task_stream(task: Task, subscription: Subscription) -> AsyncIterator[bytes]:
    with subscription:
        yield format_sse_event(event="task", data_str=json.dumps(snapshot(task)))
        if task.status in FINAL_STATUSES:
            return
        while True:
            event = await subscription.get(KEEPALIVE_S)
            if event is None:
                if subscription.closed:
                    return
                yield format_sse_event(comment="keep-alive")
                continue
            yield format_sse_event(event=event["type"], data_str=json.dumps(event, default=str))
            if event["type"] == "lagged" or (event["type"] == "task" and event["status"] in FINAL_STATUSES):
                return


class Follower:
    """What one events socket follows: some tasks (``ids``), or everything its key may see (``ids`` None; for a
    client, its unfinished tasks and those it queues from then on)."""

    def __init__(self, websocket: WebSocket, principal: Principal, store: TaskStore,
                 requested: set[str] | None) -> None:
        self.websocket = websocket
        self.principal = principal
        self.store = store
        self.ids = requested if principal.admin or requested is None else set()
        self.owned: set[str] = set()  # a client following everything: its unfinished tasks, and those it queues

    def wanted(self, event: Event) -> bool:
        ids, principal = self.ids, self.principal
        if event.get("type") not in TASK_EVENTS:
            return ids is None and (principal.admin or event.get("type") not in ADMIN_EVENTS)
        if ids is not None:
            return event.get("id") in ids
        if principal.admin:
            return True
        if event.get("owner") == principal.id:
            self.owned.add(event["id"])  # progress events name no owner: they follow from the id
        return event.get("id") in self.owned

    async def follow(self, ids: set[str] | None) -> None:
        """Follow ``ids`` (None: everything), then send their records: events from then on are not missed."""
        if ids is not None and not self.principal.admin:
            # another key's task is as unknown to this one as a missing one: not followed, nothing sent
            ids = {t.id for t in await self.store.get_many(sorted(ids))
                   if t is not None and can_see(self.principal, t.owner)}
        self.ids = ids
        for task in await self.store.get_many(sorted(ids or ())):
            if task is not None:
                await self.websocket.send_text(json.dumps(snapshot(task)))

    async def read_commands(self) -> None:
        while True:
            try:
                command = json.loads(await self.websocket.receive_text())
            except ValueError:
                await self._error("send JSON: {\"tasks\": [...]}")
                continue
            if not isinstance(command, dict) or "tasks" not in command or not (
                    command["tasks"] is None or isinstance(command["tasks"], list)):
                await self._error("send {\"tasks\": [ids]} or {\"tasks\": null}")
                continue
            await self.follow(None if command["tasks"] is None else {str(i) for i in command["tasks"]})

    async def _error(self, detail: str) -> None:
        await self.websocket.send_text(json.dumps({"type": "error", "detail": detail}))


@router.websocket("/api/events")
async def events(websocket: WebSocket, principal: Caller, services: ServicesDep) -> None:
    """Live events as JSON text frames. ``?tasks=ID,ID`` follows those tasks (each one's record comes first);
    without it, everything the key may see. Send ``{"tasks": [ids]}`` to follow others, ``{"tasks": null}``
    for everything. (``?token=KEY`` for clients that cannot send headers.)"""
    await websocket.accept()
    requested = _ids(websocket.query_params.get("tasks"))
    follower = Follower(websocket, principal, services.store, requested)
    with services.store.events.subscribe(follower.wanted) as subscription:
        reader = asyncio.get_running_loop().create_task(follower.read_commands(), name="events commands")
        try:
            if not principal.admin:
                follower.owned.update(await services.store.open_owned(principal.id))
            await follower.follow(requested)
            while not reader.done():
                event = await subscription.get(1.0)
                if event is None:
                    if subscription.closed:
                        break
                    continue
                await websocket.send_text(json.dumps(event, default=str))
                if event["type"] == "lagged":
                    await websocket.close(code=1013)
                    break
        except (WebSocketDisconnect, RuntimeError, NotFound):
            pass
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
