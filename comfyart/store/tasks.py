"""Task records in Redis: creating one (and queueing it), reading and listing them, and every status change.

Status changes go through one Lua script that checks the current status against the transition table
(``models.TRANSITIONS``) as a compare-and-set, so a task never leaves a final status and never completes twice; the
changes made while one round trip is out share the next (``GroupCommit``). Every change is published as a task
event on the daemon's bus. The keys are in ``store.keys``.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
import ulid
from redis.asyncio.client import Pipeline

from comfyart.bus import EventHub
from comfyart.clock import now_ms
from comfyart.errors import InvalidTransition, NotFound, QuotaExceeded
from comfyart.models import FINAL_STATUSES, NewTask, Task, TaskId, TaskStatus, sources_of
from comfyart.store.batching import GroupCommit
from comfyart.store.codec import WRITE_FIELDS, decode, encode, field_args, task_event
from comfyart.store.eventlog import EVENTS_KEPT, LOG_EVENT, published, stream_args
from comfyart.store.fence import FENCED_CALL, FENCED_LUA, fence_arg, refused
from comfyart.store.keys import Keys
from comfyart.store.queue import TaskQueue
from comfyart.store.redis import fields as redis_fields
from comfyart.store.redis import map_redis_errors, text_map, text_set, texts

# Many transitions in one call (``GroupCommit`` gathers them, from several callers), each checked and applied on
# its own, in order; each carries its caller's fencing epoch (``store.fence``: a stale one is refused, that item
# alone).
# KEYS: the fencing epoch, all-index prefix (P:tasks), active set, queue, claims, open prompts of the
#       ComfyUI-compatible API, webhooks due, owners' prefix (P:owner:)
# ARGV: task key prefix, now_ms, the event stream ('' = none: one process) and its cap (``store.eventlog``), then
#       per transition: fencing epoch ('' = none), id, allowed statuses joined by ',' ('' = any non-final), new
#       status ('' = keep), expected field ('' = none), its expected value, the event's published fields (JSON),
#       number of field/value pairs, field, value, ...
# Returns per transition: outcome ('ok', 'missing', 'refused', 'fenced'), status before (the refusal's message when
# fenced), client_id, webhook due, owner
_TRANSITIONS = FENCED_LUA + WRITE_FIELDS + LOG_EVENT + """
local results = {}
local i = 5
while i <= #ARGV do
  local fence, id, allowed, new = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local expect_field, expect_value, data = ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]
  local first, last = i + 8, i + 7 + 2 * tonumber(ARGV[i + 7])
  i = last + 1
  local task_key = ARGV[1] .. id
  local refusal = fenced(fence)
  local current = refusal or redis.call('HGET', task_key, 'status')
  local outcome, client_id, webhook, owner = 'ok', '', '', ''
  if refusal then
    outcome = 'fenced'
  elseif not current then
    outcome, current = 'missing', ''
  elseif expect_field ~= '' and redis.call('HGET', task_key, expect_field) ~= expect_value then
    outcome = 'refused'
  elseif allowed == '' then
    if current == 'completed' or current == 'failed' or current == 'canceled' then outcome = 'refused' end
  elseif not string.find(',' .. allowed .. ',', ',' .. current .. ',', 1, true) then
    outcome = 'refused'
  end
  if outcome == 'ok' then
    write_fields(task_key, first, last, ARGV[2])
    if new ~= '' and new ~= current then
      local created = redis.call('HGET', task_key, 'created_ms')
      redis.call('HSET', task_key, 'status', new)
      if current ~= 'pending' then redis.call('ZREM', KEYS[2] .. ':' .. current, id) end
      if new ~= 'pending' then redis.call('ZADD', KEYS[2] .. ':' .. new, created, id) end
      if new == 'completed' or new == 'failed' or new == 'canceled' then
        redis.call('SREM', KEYS[3], id)
        redis.call('ZREM', KEYS[4], id)
        redis.call('ZREM', KEYS[5], id)
        redis.call('ZREM', KEYS[6], id)
        if redis.call('HEXISTS', task_key, 'webhook') == 1 then
          redis.call('ZADD', KEYS[7], ARGV[2], id)
          webhook = '1'
        end
        local open_owner = redis.call('HGET', task_key, 'owner')
        if open_owner then redis.call('SREM', KEYS[8] .. open_owner .. ':open', id) end
      end
    end
    local ids = redis.call('HMGET', task_key, 'client_id', 'owner')
    client_id, owner = ids[1] or '', ids[2] or ''
    local after = new
    if after == '' then after = current end
    log_event(ARGV[3], ARGV[4], 'task', id, after, current, client_id, owner, webhook, data)
  end
  results[#results + 1] = {outcome, current, client_id, webhook, owner}
end
return results
"""

# KEYS: the owner's open set   ARGV: max (0: none), id   returns 1 when admitted
_ADMIT = """
if tonumber(ARGV[1]) > 0 and redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('SADD', KEYS[1], ARGV[2])
return 1
"""

# KEYS: the fencing epoch   ARGV: fencing epoch, task key prefix, now_ms, event stream and its cap, then per task:
# id, prompt id, the event's fields (JSON), number of field/value pairs, field, value, ...
# Progress of a running attempt: written (and logged) only while the task is pending or running that very prompt.
_PROGRESS = FENCED_CALL + WRITE_FIELDS + LOG_EVENT + """
local i = 6
while i <= #ARGV do
  local id, prompt_id, data, pairs = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  local task_key = ARGV[2] .. id
  local first, last = i + 4, i + 3 + 2 * pairs
  i = last + 1
  local current = redis.call('HMGET', task_key, 'status', 'prompt_id')
  if (current[1] == 'pending' or current[1] == 'running') and current[2] == prompt_id then
    write_fields(task_key, first, last, ARGV[3])
    log_event(ARGV[4], ARGV[5], 'progress', id, '', '', '', '', '', data)
  end
end
"""

def _created_entry(task_id: str, new: NewTask, created_ms: int) -> dict[Any, Any]:
    """The stream entry of a new task (``store.eventlog``): what ``create`` publishes locally in one process."""
    client_id = new.comfy.client_id if new.comfy is not None else None
    return {"t": "task", "id": task_id, "s": TaskStatus.PENDING.value, "p": "", "c": client_id or "",
            "o": new.owner or "", "w": "", "d": published({"created_ms": created_ms})}


OWNED_PAGE = 500  # an owner's tasks are read this many at a time when filtered by status


def record_fields(new: NewTask, created_ms: int) -> dict[str, Any]:
    """What a new task's record holds: only what differs from the defaults."""
    fields: dict[str, Any] = {"status": TaskStatus.PENDING, "created_ms": created_ms}
    if new.owner is not None:
        fields["owner"] = new.owner
    if new.retry_of is not None:
        fields["retry_of"] = new.retry_of
    if new.prompt is not None:
        fields["prompt"] = new.prompt
    else:
        fields.update(workflow=new.workflow, workflow_version=new.workflow_version, params=new.params or {})
    if new.priority:
        fields["priority"] = new.priority
    if new.requires:
        fields["requires"] = sorted(set(new.requires))
    if new.vram_mb is not None:
        fields["vram_mb"] = new.vram_mb
    if new.webhook is not None:
        fields["webhook"] = new.webhook
        if new.webhook_public_only:
            fields["webhook_public_only"] = 1
    if new.comfy is not None:
        fields.update({k: v for k, v in new.comfy.fields().items() if v is not None})
    if new.needs is not None:
        fields["needs"] = new.needs
    if new.v2:
        fields["v2"] = 1
    if new.labels:
        fields["labels"] = new.labels
    return fields


class TaskStore:
    def __init__(self, client: aioredis.Redis, keys: Keys, queue: TaskQueue, *, events: EventHub,
                 stream: str = "", events_kept: int = EVENTS_KEPT) -> None:
        self.redis = client
        self.keys = keys
        self.queue = queue  # a new task enters it in the same transaction as its record
        # every change a task goes through is published here: at once by this store without ``stream``, else
        # logged on ``stream`` by the script that makes it, and published by every replica's bridge
        self.events = events
        self.stream = stream
        self.events_kept = events_kept  # the stream's cap (cluster.events_kept)
        self._transitions = client.register_script(_TRANSITIONS)
        self.transitions = GroupCommit(self._send_transitions)  # status changes share round trips
        self._transition_keys = [keys.leader_epoch, keys.tasks, keys.active, keys.queue, keys.claims,
                                 keys.comfy_open, keys.webhooks, keys.owner_prefix]
        self._progress = client.register_script(_PROGRESS)
        self._admit = client.register_script(_ADMIT)
        self._last_id = 0

    def _new_id(self) -> TaskId:
        """A ULID greater than every one this store minted before: ids sort in creation order even within
        one millisecond, which keeps listings and the queue in submission order."""
        value = max(int(ulid.new()), self._last_id + 1)
        self._last_id = value
        return TaskId(str(ulid.from_int(value)))

    # ------------------------------------------------------------------ creating
    async def create(self, new: NewTask, *, max_queued: int = 0,
                     bind: Callable[[Pipeline, TaskId, int], Awaitable[None]] | None = None) -> Task:
        """Queue a task: a whole graph, or a workflow's name, version and parameter values (the graph is resolved
        at dispatch, which keeps a long queue small). A task of the ComfyUI-compatible API (``new.comfy``) is
        found by its prompt id, within its owner's namespace. With ``max_queued`` an owner may have that many
        tasks unfinished, else QuotaExceeded. ``bind``: queues more writes on the task's MULTI (an
        Idempotency-Key bound to the new id, ``IdempotencyStore.bind_in``; a v2 job's indexes, scored by the
        record's created_ms, which it is given), so they commit with the record or not at all."""
        task_id = self._new_id()
        owner = new.owner
        if owner is not None and max_queued > 0:  # without a limit, the open set is written with the record
            await self._admit_owned(owner, task_id, max_queued)
        created = now_ms()
        fields = record_fields(new, created)
        keys = self.keys
        with map_redis_errors():
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(keys.task(task_id), mapping=redis_fields(encode(fields)))
                pipe.zadd(keys.tasks, {task_id: created})
                pipe.zadd(keys.queue, {task_id: self.queue.score(created, new.priority)})
                if owner is not None:
                    pipe.zadd(keys.owner_tasks(owner), {task_id: created})
                    if max_queued <= 0:
                        pipe.sadd(keys.owner_open(owner), task_id)
                if new.comfy is not None:
                    # a prompt id given again takes over its history entry, as in ComfyUI
                    pipe.set(keys.comfy_prompt(new.comfy.comfy_prompt_id, owner), task_id)
                    pipe.zadd(keys.comfy_prompts(owner), {new.comfy.comfy_prompt_id: created})
                    pipe.zadd(keys.comfy_open, {task_id: new.comfy.number})
                    if owner is not None:  # an admin sees every owner's prompts through these
                        pipe.zadd(keys.comfy_everyone, {task_id: created})
                        pipe.set(keys.comfy_anyone(new.comfy.comfy_prompt_id), task_id)
                if bind is not None:
                    await bind(pipe, task_id, created)
                if self.stream:
                    pipe.xadd(self.stream, dict(_created_entry(task_id, new, created)), maxlen=self.events_kept,
                              approximate=True)
                await pipe.execute()
        self.queue.note_queued()
        if self.events.listening and not self.stream:
            client_id = new.comfy.client_id if new.comfy is not None else None
            self.events.publish(task_event(task_id, TaskStatus.PENDING, None, client_id, {"created_ms": created},
                                           owner))
        return Task.model_validate({"id": task_id, "updated_ms": created, **fields})

    async def _admit_owned(self, owner: str, task_id: str, max_queued: int) -> None:
        """Count the task against its owner's unfinished ones, atomically, or raise QuotaExceeded. A refusal
        first drops ids that are final or gone (a crash between admission and the record leaves one)."""
        key = self.keys.owner_open(owner)
        with map_redis_errors():
            if await self._admit(keys=[key], args=[max_queued, task_id]):
                return
            members = sorted(text_set(await self.redis.smembers(key)))
            found = await self.get_many(members)
            stale = [m for m, t in zip(members, found, strict=True) if t is None or t.status in FINAL_STATUSES]
            if stale:
                await self.redis.srem(key, *stale)
                if await self._admit(keys=[key], args=[max_queued, task_id]):
                    return
        raise QuotaExceeded(f"quota: {max_queued} tasks pending or running at once; wait for some to finish",
                            retry_after_s=5, kind="queue")

    # ------------------------------------------------------------------ reading
    async def get(self, task_id: str) -> Task:
        with map_redis_errors():
            raw = await self.redis.hgetall(self.keys.task(task_id))
        if not raw:
            raise NotFound(f"no task {task_id}")
        return decode(task_id, text_map(raw))

    async def get_many(self, task_ids: Sequence[str]) -> list[Task | None]:
        """The records of ``task_ids`` in one round trip; None for an id with no record."""
        with map_redis_errors():
            async with self.redis.pipeline(transaction=False) as pipe:
                for task_id in task_ids:
                    pipe.hgetall(self.keys.task(task_id))
                records = await pipe.execute()
        return [decode(task_id, raw) if raw else None for task_id, raw in zip(task_ids, records, strict=True)]

    async def page(self, *, status: TaskStatus | None = None, limit: int = 50, offset: int = 0,
                   owner: str | None = None) -> list[Task]:
        """Newest first; pending tasks in the order they run (``TaskQueue.pending_ids``). With ``owner``: that
        key's tasks only, newest first."""
        if owner is not None:
            return (await self._owned(owner, status, offset + limit))[offset:]
        if status == TaskStatus.PENDING:
            ids = await self.queue.pending_ids(limit, offset)
        else:
            with map_redis_errors():
                ids = texts(await self.redis.zrevrange(self.keys.in_status(status), offset, offset + limit - 1))
        return [task for task in await self.get_many(ids)
                if task is not None and (status is None or task.status == status)]

    async def _owned(self, owner: str, status: TaskStatus | None, wanted: int | None) -> list[Task]:
        """An owner's tasks in ``status``, newest first, read a page at a time until ``wanted`` are found."""
        found: list[Task] = []
        start = 0
        while wanted is None or len(found) < wanted:
            with map_redis_errors():
                ids = texts(await self.redis.zrevrange(self.keys.owner_tasks(owner), start, start + OWNED_PAGE - 1))
            if not ids:
                break
            found += [t for t in await self.get_many(ids) if t is not None and (status is None or t.status == status)]
            start += OWNED_PAGE
        return found if wanted is None else found[:wanted]

    async def count(self, status: TaskStatus | None = None, owner: str | None = None) -> int:
        if owner is not None:
            if status is None:
                with map_redis_errors():
                    return int(await self.redis.zcard(self.keys.owner_tasks(owner)))
            return len(await self._owned(owner, status, None))
        if status != TaskStatus.PENDING:
            with map_redis_errors():
                return int(await self.redis.zcard(self.keys.in_status(status)))
        census = await self.queue.census()
        # pending: queued, claimed, or submitted and not yet started (the active set holds those and the running)
        return census.queued + census.claimed + census.active - census.running

    async def open_owned(self, owner: str) -> list[str]:
        """Ids of ``owner``'s tasks not final yet."""
        with map_redis_errors():
            return sorted(text_set(await self.redis.smembers(self.keys.owner_open(owner))))

    async def active_tasks(self) -> list[Task]:
        """The tasks submitted to a backend and not final (after a restart: the ones to follow again)."""
        ids = await self.queue.active_ids()
        return [t for t in await self.get_many(ids) if t is not None and t.status not in FINAL_STATUSES]

    # ------------------------------------------------------------------ changing
    async def update(self, task_id: str, *, to: TaskStatus | None = None,
                     allowed_from: Sequence[TaskStatus] | None = None, expect: tuple[str, str] | None = None,
                     **fields: Any) -> TaskStatus:
        """Write ``fields`` (None deletes one) and move to ``to`` if the current status allows it and, with
        ``expect=(field, value)``, if that field still holds that value (e.g. the prompt id of the attempt being
        ended). Without ``allowed_from`` a status change follows the transition table, and a bare field update
        applies only to a task that is not final. Returns the status before the change; raises InvalidTransition.
        Fenced by the context's fence (``store.fence``): a leader's loop whose epoch is over gets Fenced, a user's
        change (no fence) goes through."""
        if allowed_from is None:
            allowed_from = sources_of(to) if to is not None else []
        pairs = field_args(fields)
        outcome, previous, client_id, webhook_due, owner = await self.transitions(
            [fence_arg(), task_id, ",".join(allowed_from), to.value if to else "", *(expect or ("", "")),
             published(fields) if self.stream else "", len(pairs) // 2, *pairs])
        if outcome == "fenced":
            raise refused(previous)
        if outcome == "missing":
            raise NotFound(f"no task {task_id}")
        if outcome == "refused":
            raise InvalidTransition(f"task {task_id} is {previous}; cannot move to {to or 'an update'}")
        if self.events.listening and not self.stream:
            self.events.publish(task_event(task_id, to or TaskStatus(previous), TaskStatus(previous), client_id,
                                           {**fields, "webhook_due": True} if webhook_due else fields, owner))
        return TaskStatus(previous)

    async def _send_transitions(self, transitions: Sequence[list[Any]]) -> list[list[str]]:
        args: list[Any] = [self.keys.task_prefix, now_ms(), *stream_args(self.stream, self.events_kept)]
        for transition in transitions:
            args += transition
        with map_redis_errors():
            results: list[list[str]] = await self._transitions(keys=self._transition_keys, args=args)
        return results

    async def cancel(self, task_id: str) -> TaskStatus:
        """Mark a pending or running task canceled, which takes it out of the queue, claims and active set (as
        every final status does, in the same script); returns the status it had."""
        return await self.update(task_id, to=TaskStatus.CANCELED,
                                 allowed_from=[TaskStatus.PENDING, TaskStatus.RUNNING], finished_ms=now_ms())

    async def write_progress(self, updates: Sequence[tuple[str, str, dict[str, Any]]]) -> None:
        """Progress fields of running attempts, ``(task id, prompt id, fields)`` each, in one round trip. A task
        that ended, or moved on to another attempt, is left as it is."""
        if not updates:
            return
        args: list[Any] = [fence_arg(), self.keys.task_prefix, now_ms(), *stream_args(self.stream, self.events_kept)]
        for task_id, prompt_id, fields in updates:
            pairs = field_args(fields)
            data = published({"prompt_id": prompt_id, **fields}) if self.stream else ""
            args += [task_id, prompt_id, data, len(pairs) // 2, *pairs]
        with map_redis_errors():
            await self._progress(keys=[self.keys.leader_epoch], args=args)
        if self.events.listening and not self.stream:
            for task_id, prompt_id, fields in updates:
                self.events.publish({"type": "progress", "id": task_id, "prompt_id": prompt_id, **fields})

    async def ping(self) -> None:
        """Raises StoreUnavailable when Redis does not answer (the health check)."""
        with map_redis_errors():
            await self.redis.ping()
