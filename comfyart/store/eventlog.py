"""Task events through Redis, for several replicas on one Redis (issue 24): the stream ``P:events``.

Why a stream and not pub/sub: an end event must reach every replica even when its connection blipped or Redis
restarted, and pub/sub drops whatever is sent while a subscriber is away; a stream is read from the last id a
replica saw, so a reconnect resumes where it stopped (and says so when the stream was trimmed past it). Each entry
is XADDed *inside* the script that makes the change (``store.tasks``' transitions, ``store.queue``'s recorded
submissions, progress) or in the MULTI that creates the task, so the stream's order is the commit order and no
change is ever committed without its event, nor an event sent for a change that did not land. The stream is capped
(``XADD MAXLEN ~ cluster.events_kept``): about 300 bytes an entry, so 100,000 entries are ~30 MB. XREAD BLOCK wakes
on the XADD, so the latency is pub/sub's.

In a replicated store (``stream`` set) the stores publish nothing on the local hub themselves: every replica's
``cluster.bridge.EventBridge`` reads the stream and publishes each event on its own hub, the writer's included, so
every replica sees one order and a local subscriber each event once. Without a stream (one process, the embedded
Redis: the default) the stores publish on the local hub right after the script, as before.

An entry's fields: ``t`` task | progress, ``id`` the task, ``s`` status after, ``p`` status before ('' for a new
task), ``c`` ComfyUI client id, ``o`` owner, ``w`` '1' when a webhook became due, ``d`` JSON of the published fields
(``published``). ``event_of`` turns an entry back into the event the hub carries (``codec.task_event``'s shape).
"""
from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis

from comfyart.bus import Event
from comfyart.config.settings import Settings
from comfyart.models import TaskStatus
from comfyart.store.codec import UNPUBLISHED, task_event
from comfyart.store.keys import Keys
from comfyart.store.redis import map_redis_errors, text

EVENTS_KEPT = 100_000  # cluster.events_kept's default (approximate: MAXLEN ~ trims whole macro nodes)

# Lua: append one task event to the stream named by ARGV[stream_at] (capped by ARGV[stream_at + 1]); nothing when
# the name is '' (one process: the caller publishes locally). Every script that logs events takes these two ARGVs.
LOG_EVENT = """
local function log_event(stream, kept, kind, id, status, previous, client_id, owner, webhook, data)
  if stream == '' then return end
  redis.call('XADD', stream, 'MAXLEN', '~', kept, '*', 't', kind, 'id', id, 's', status, 'p', previous,
             'c', client_id, 'o', owner, 'w', webhook, 'd', data)
end
"""


def replicated(settings: Settings) -> bool:
    """Whether task events, frames and previews go through Redis for other replicas: with a Redis of one's own
    (``redis.url``), which other replicas may share; never with the embedded one, which no other process serves."""
    if settings.cluster.replicated is not None:
        return settings.cluster.replicated
    return settings.redis.url is not None


def published(fields: dict[str, Any]) -> str:
    """The ``d`` of an entry: the fields a task event publishes (``codec.UNPUBLISHED`` left out), as JSON."""
    return json.dumps({key: value.value if isinstance(value, TaskStatus) else value
                       for key, value in fields.items() if key not in UNPUBLISHED},
                      separators=(",", ":"), default=str)


def event_of(entry: dict[str, str]) -> Event:
    """The hub's event for a stream entry."""
    data: dict[str, Any] = json.loads(entry.get("d") or "{}")
    if entry.get("t") == "progress":
        return {"type": "progress", "id": entry["id"], **data}
    if entry.get("w") == "1":
        data["webhook_due"] = True
    previous = entry.get("p") or None
    return task_event(entry["id"], TaskStatus(entry["s"]), TaskStatus(previous) if previous else None,
                      entry.get("c") or None, data, entry.get("o") or None)


def stream_args(stream: str, kept: int = EVENTS_KEPT) -> list[Any]:
    """The two ARGVs ``LOG_EVENT`` takes: the stream's name ('' = none) and its cap."""
    return [stream, kept]


def id_after(first: str, second: str) -> bool:
    """Whether stream id ``first`` comes after ``second`` (ids are "ms-seq")."""
    return _parts(first) > _parts(second)


def _parts(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class EventLog:
    """Reading the stream: what ``cluster.bridge.EventBridge`` follows."""

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.redis = client
        self.key = keys.events

    async def read(self, after_id: str, *, block_ms: int, count: int) -> list[tuple[str, Event]]:
        """Entries after ``after_id``, waiting up to ``block_ms`` for one; ``[]`` when none came."""
        with map_redis_errors():
            reply: Any = await self.redis.xread({self.key: after_id}, count=count, block=block_ms)
        if not reply:
            return []
        entries: list[tuple[str, dict[str, str]]] = reply[0][1]
        return [(entry_id, event_of(fields)) for entry_id, fields in entries]

    async def last_id(self) -> str:
        """The newest entry's id, ``0-0`` for an empty (or absent) stream."""
        with map_redis_errors():
            newest = await self.redis.xrevrange(self.key, count=1)
        return text(newest[0][0]) if newest else "0-0"

    async def first_id(self) -> str | None:
        """The oldest entry still kept; None for an empty stream."""
        with map_redis_errors():
            oldest = await self.redis.xrange(self.key, count=1)
        return text(oldest[0][0]) if oldest else None

    async def length(self) -> int:
        with map_redis_errors():
            return int(await self.redis.xlen(self.key))
