"""Task records and the task queue in Redis.

Key schema (``P`` is the configured prefix):
    P:task:{id}             hash: the task record (JSON-encoded values for prompt, params, outputs, node_errors)
    P:tasks                 zset: every task id scored by created_ms (newest first listing)
    P:tasks:{status}        zset: task ids in that status, scored by created_ms; none for ``pending``: a pending
                            task is in the queue, the claims or the active set already, and a second index of a
                            long queue would cost a tenth of its memory
    P:queue                 zset: pending task ids scored by ``scheduling.queue_score`` (priority, then age), lowest
                            first; the dispatcher reads a window of its head and claims the ids it assigns
    P:claims                zset: ids taken from the queue but not yet submitted, scored by their lease's end;
                            an expired lease (and every claim at start-up) puts the id back in the queue
    P:active                set: ids submitted to a backend and not yet final
    P:prompt:{prompt_id}    string: the task id that owns a ComfyUI prompt id
    P:comfy:prompt:{id}     string: the task id of a prompt id a client of the ComfyUI-compatible API knows
    P:comfy:prompts         zset: those prompt ids scored by created_ms: that API's history and jobs
    P:comfy:open            zset: ids of that API's tasks not yet final, scored by their queue number
    P:comfy:number          counter: that API's queue numbers
    P:webhooks              zset: ids of final tasks whose webhook is yet to be delivered, scored by when the
                            next attempt is due (ms); added by the transition to a final status itself, so a
                            crash cannot lose a delivery
    P:owner:{o}:tasks       zset: the tasks of one API key (auth on), scored by created_ms: a client's listing
    P:owner:{o}:open        set: its tasks not final yet: its quota; a final status leaves it in the transition
    P:owner:{o}:rate        string: the theoretical arrival time (ms) of its submission rate limit (GCRA)
    P:owner:{o}:comfy:...   the ComfyUI-compatible API's prompt ids and history above, one namespace per key:
                            prompt ids and client ids are the callers' own and may collide
Status changes go through one Lua script that checks the current status, so a task never leaves a final
status and never completes twice. Claiming (queue -> claims) and recording a submission (claims -> active) are
Lua scripts too: a task is always in exactly one of queue, claims and active, or final.
"""
from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import redis.asyncio as aioredis
import ulid

from comfyart.bus import EventHub
from comfyart.clock import now_ms
from comfyart.errors import InvalidTransition, NotFound, QuotaExceeded
from comfyart.models import FINAL_STATUSES, Task, TaskId, TaskStatus, sources_of
from comfyart.policy.priority import STRICT_LEVEL_MS, queue_score
from comfyart.store.batching import GroupCommit
from comfyart.store.redis import map_redis_errors

_JSON_FIELDS = ("prompt", "outputs", "node_errors", "params", "history", "requires", "extra_data", "comfy_outputs",
                "comfy_messages", "webhook_deliveries", "comfy_targets")
_INT_FIELDS = ("created_ms", "updated_ms", "started_ms", "finished_ms", "node_step", "node_max", "attempts",
               "workflow_version", "submitted_ms", "priority", "vram_mb")
_FLOAT_FIELDS = ("progress", "number")
# what a task event leaves out: large, and in the record for whoever needs it
_UNPUBLISHED = frozenset({"prompt", "params", "history", "extra_data", "comfy_outputs", "comfy_messages",
                          "comfy_targets", "node_errors", "webhook_deliveries"})

# ARGV[first..last] hold field, value pairs; a value of "\0" (DELETE) removes the field
_WRITE_FIELDS = """
local function write_fields(task_key, first, last, now_ms)
  for j = first, last, 2 do
    if ARGV[j + 1] == '\\0' then redis.call('HDEL', task_key, ARGV[j])
    else redis.call('HSET', task_key, ARGV[j], ARGV[j + 1]) end
  end
  redis.call('HSET', task_key, 'updated_ms', now_ms)
end
"""

# Many transitions in one call (``GroupCommit`` gathers them), each checked and applied on its own, in order.
# KEYS: all-index prefix (P:tasks), active set, queue, claims, open prompts of the ComfyUI-compatible API, webhooks
#       due, owners' prefix (P:owner:)
# ARGV: task key prefix, now_ms, then per transition: id, allowed statuses joined by ',' ('' = any non-final), new
#       status ('' = keep), expected field ('' = none), its expected value, number of field/value pairs, field,
#       value, ...
# Returns per transition: outcome ('ok', 'missing', 'refused'), status before, client_id, webhook due, owner
_TRANSITIONS = _WRITE_FIELDS + """
local results = {}
local i = 3
while i <= #ARGV do
  local id, allowed, new, expect_field, expect_value = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local first, last = i + 6, i + 5 + 2 * tonumber(ARGV[i + 5])
  i = last + 1
  local task_key = ARGV[1] .. id
  local current = redis.call('HGET', task_key, 'status')
  local outcome, client_id, webhook, owner = 'ok', '', '', ''
  if not current then
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
      if current ~= 'pending' then redis.call('ZREM', KEYS[1] .. ':' .. current, id) end
      if new ~= 'pending' then redis.call('ZADD', KEYS[1] .. ':' .. new, created, id) end
      if new == 'completed' or new == 'failed' or new == 'canceled' then
        redis.call('SREM', KEYS[2], id)
        redis.call('ZREM', KEYS[3], id)
        redis.call('ZREM', KEYS[4], id)
        redis.call('ZREM', KEYS[5], id)
        if redis.call('HEXISTS', task_key, 'webhook') == 1 then
          redis.call('ZADD', KEYS[6], ARGV[2], id)
          webhook = '1'
        end
        local open_owner = redis.call('HGET', task_key, 'owner')
        if open_owner then redis.call('SREM', KEYS[7] .. open_owner .. ':open', id) end
      end
    end
    local ids = redis.call('HMGET', task_key, 'client_id', 'owner')
    client_id, owner = ids[1] or '', ids[2] or ''
  end
  results[#results + 1] = {outcome, current, client_id, webhook, owner}
end
return results
"""

# KEYS: queue, claims   ARGV: lease end (ms), id, id, ...   returns 1 per id claimed, 0 per id no longer queued
_CLAIM = """
local claimed = {}
for i = 2, #ARGV do
  if redis.call('ZREM', KEYS[1], ARGV[i]) == 1 then
    redis.call('ZADD', KEYS[2], ARGV[1], ARGV[i])
    claimed[#claimed + 1] = 1
  else
    claimed[#claimed + 1] = 0
  end
end
return claimed
"""

# KEYS: the owner's open set   ARGV: max (0: none), id   returns 1 when admitted
_ADMIT = """
if tonumber(ARGV[1]) > 0 and redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('SADD', KEYS[1], ARGV[2])
return 1
"""

# a task's place in the queue, as scheduling.queue_score computes it; ARGV[level] is the ms one level is worth
_SCORE = """
local function score(task_key, level_ms)
  local fields = redis.call('HMGET', task_key, 'created_ms', 'priority')
  return string.format('%.0f', tonumber(fields[1] or '0') - tonumber(fields[2] or '0') * tonumber(level_ms))
end
"""

# KEYS: task, queue, claims, active   ARGV: id, level ms
_REQUEUE = _SCORE + """
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('SREM', KEYS[4], ARGV[1])
redis.call('ZADD', KEYS[2], score(KEYS[1], ARGV[2]), ARGV[1])
"""

# KEYS: claims, queue   ARGV: claims whose lease ends at or before this (ms, or '+inf') go back to the queue,
# task key prefix, level ms
_RETURN_CLAIMS = _SCORE + """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZADD', KEYS[2], score(ARGV[2] .. id, ARGV[3]), id)
end
return ids
"""

# KEYS: claims, active   ARGV: task key prefix, prompt key prefix, now_ms, then per task: id, prompt id, number
# of field/value pairs, field, value, ...   Returns one outcome per task.
# Only a pending task whose claim this dispatcher still holds is submitted: an expired lease or a cancel wins.
_RECORD_SUBMISSIONS = _WRITE_FIELDS + """
local outcomes = {}
local i = 4
while i <= #ARGV do
  local id, prompt_id, pairs = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local task_key = ARGV[1] .. id
  local first, last = i + 3, i + 2 + 2 * pairs
  i = last + 1
  local status = redis.call('HGET', task_key, 'status')
  local outcome = 'ok'
  if not status then outcome = 'missing'
  elseif status ~= 'pending' then outcome = status
  elseif redis.call('ZSCORE', KEYS[1], id) == false then outcome = 'unclaimed' end
  redis.call('ZREM', KEYS[1], id)
  if outcome == 'ok' then
    write_fields(task_key, first, last, ARGV[3])
    redis.call('SET', ARGV[2] .. prompt_id, id)
    redis.call('SADD', KEYS[2], id)
  end
  outcomes[#outcomes + 1] = outcome
end
return outcomes
"""

# ARGV: task key prefix, now_ms, then per task: id, prompt id, number of field/value pairs, field, value, ...
# Progress of a running attempt: written only while the task is pending or running that very prompt.
_PROGRESS = _WRITE_FIELDS + """
local i = 3
while i <= #ARGV do
  local task_key, prompt_id, pairs = ARGV[1] .. ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local first, last = i + 3, i + 2 + 2 * pairs
  i = last + 1
  local current = redis.call('HMGET', task_key, 'status', 'prompt_id')
  if (current[1] == 'pending' or current[1] == 'running') and current[2] == prompt_id then
    write_fields(task_key, first, last, ARGV[2])
  end
end
"""

DELETE = "\0"  # a field value that removes the field



def _encode(fields: dict[str, Any]) -> dict[str, str]:
    encoded = {}
    for key, value in fields.items():
        if value is None:
            encoded[key] = DELETE
        elif key in _JSON_FIELDS:
            encoded[key] = json.dumps(value, separators=(",", ":"))
        else:
            encoded[key] = str(value.value if isinstance(value, TaskStatus) else value)
    return encoded


def _field_args(fields: dict[str, Any]) -> list[str]:
    """``field, value, field, value, ...`` as the Lua scripts take them."""
    return [part for pair in _encode(fields).items() for part in pair]


class _Census(NamedTuple):
    queued: int
    claimed: int
    active: int  # submitted to a backend, running ones included
    running: int


@dataclass(frozen=True)
class Submission:
    """A claimed task about to be posted: where, under which prompt id, and the graph it resolved to (for a task
    queued by workflow name)."""

    task_id: str
    backend: str
    prompt_id: str
    attempts: int
    resolved_prompt: dict[str, Any] | None = None


def _submission_refusal(task_id: str, outcome: str) -> Exception | None:
    if outcome == "ok":
        return None
    if outcome == "missing":
        return NotFound(f"no task {task_id}")
    if outcome == "unclaimed":
        return InvalidTransition(f"task {task_id}: its claim expired before it was submitted")
    return InvalidTransition(f"task {task_id} is {outcome}; not submitted")


def _decode(task_id: str, raw: dict[str, str]) -> Task:
    # a new record holds only what differs from the defaults (id is in its key, updated_ms starts at created_ms):
    # every field costs tens of bytes, and a queue can hold millions of records
    record: dict[str, Any] = {"id": task_id, "updated_ms": raw["created_ms"], **raw}
    for key in _JSON_FIELDS:
        if key in record:
            record[key] = json.loads(record[key])
    for key in _INT_FIELDS:
        if key in record:
            record[key] = int(record[key])
    for key in _FLOAT_FIELDS:
        if key in record:
            record[key] = float(record[key])
    return Task.model_validate(record)


class TaskStore:
    def __init__(self, client: aioredis.Redis, prefix: str = "comfyart", *, ageing_s: float = 0.0,
                 events: EventHub | None = None) -> None:
        self.redis = client
        self.prefix = prefix
        self.events = events or EventHub()  # every change a task goes through is published here
        self.ageing_s = ageing_s  # a queued task gains one priority level per this long (0: strict priority)
        self.queued = asyncio.Event()  # set whenever a task enters the queue: the dispatcher wakes on it
        self._transitions = client.register_script(_TRANSITIONS)
        self.transitions = GroupCommit(self._send_transitions)  # status changes share round trips
        self._transition_keys = [f"{prefix}:tasks", self.active_key, self.queue_key, self.claims_key,
                                 self.comfy_open_key, self.webhooks_key, f"{prefix}:owner:"]
        self._claim = client.register_script(_CLAIM)
        self._requeue = client.register_script(_REQUEUE)
        self._return_claims = client.register_script(_RETURN_CLAIMS)
        self._record_submissions = client.register_script(_RECORD_SUBMISSIONS)
        self._progress = client.register_script(_PROGRESS)
        self._admit = client.register_script(_ADMIT)
        self._last_id = 0

    def _new_id(self) -> TaskId:
        """A ULID greater than every one this store minted before: ids sort in creation order even within
        one millisecond, which keeps listings and the queue in submission order."""
        value = max(int(ulid.new()), self._last_id + 1)
        self._last_id = value
        return TaskId(str(ulid.from_int(value)))

    # ------------------------------------------------------------------ keys
    def _task_key(self, task_id: str) -> str:
        return f"{self.prefix}:task:{task_id}"

    @property
    def queue_key(self) -> str:
        return f"{self.prefix}:queue"

    @property
    def claims_key(self) -> str:
        return f"{self.prefix}:claims"

    @property
    def active_key(self) -> str:
        return f"{self.prefix}:active"

    def _prompt_key(self, prompt_id: str) -> str:
        return f"{self.prefix}:prompt:{prompt_id}"

    def _comfy_space(self, owner: str | None) -> str:
        return f"{self.prefix}:comfy" if owner is None else f"{self.prefix}:owner:{owner}:comfy"

    def _comfy_key(self, comfy_prompt_id: str, owner: str | None = None) -> str:
        return f"{self._comfy_space(owner)}:prompt:{comfy_prompt_id}"

    def comfy_prompts_key(self, owner: str | None = None) -> str:
        return f"{self._comfy_space(owner)}:prompts"

    def owner_tasks_key(self, owner: str) -> str:
        return f"{self.prefix}:owner:{owner}:tasks"

    def owner_open_key(self, owner: str) -> str:
        return f"{self.prefix}:owner:{owner}:open"

    @property
    def webhooks_key(self) -> str:
        return f"{self.prefix}:webhooks"

    @property
    def comfy_open_key(self) -> str:
        return f"{self.prefix}:comfy:open"

    @property
    def level_ms(self) -> int:
        return int(self.ageing_s * 1000) if self.ageing_s > 0 else STRICT_LEVEL_MS

    # ------------------------------------------------------------------ records
    async def create(self, prompt: dict[str, Any] | None = None, *, workflow: str | None = None,
                     workflow_version: int | None = None, params: dict[str, Any] | None = None,
                     priority: int = 0, requires: Sequence[str] = (), vram_mb: int | None = None,
                     webhook: str | None = None, comfy: dict[str, Any] | None = None,
                     owner: str | None = None, max_queued: int = 0, webhook_public_only: bool = False,
                     retry_of: str | None = None) -> Task:
        """Queue a task: a whole graph, or a workflow's name, version and parameter values (the graph is resolved
        at dispatch, which keeps a long queue small). Defaults are not stored: a queue can hold millions.
        ``comfy`` holds what the ComfyUI-compatible API records: ``comfy_prompt_id``, ``client_id``, ``number``,
        ``extra_data``; the prompt id then finds the task (within the owner's namespace). ``owner`` is the API
        key's id; with ``max_queued`` it may have that many tasks unfinished, else QuotaExceeded."""
        task_id = self._new_id()
        if owner is not None and max_queued > 0:  # without a limit, the open set is written with the record
            await self._admit_owned(owner, task_id, max_queued)
        created = now_ms()
        fields: dict[str, Any] = {"status": TaskStatus.PENDING, "created_ms": created}
        if owner is not None:
            fields["owner"] = owner
        if retry_of is not None:
            fields["retry_of"] = retry_of
        if prompt is not None:
            fields["prompt"] = prompt
        else:
            fields.update(workflow=workflow, workflow_version=workflow_version, params=params or {})
        if priority:
            fields["priority"] = priority
        if requires:
            fields["requires"] = sorted(set(requires))
        if vram_mb is not None:
            fields["vram_mb"] = vram_mb
        if webhook is not None:
            fields["webhook"] = webhook
            if webhook_public_only:
                fields["webhook_public_only"] = 1
        comfy = {k: v for k, v in (comfy or {}).items() if v is not None}
        fields.update(comfy)
        with map_redis_errors():
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(self._task_key(task_id), mapping=_encode(fields))
                pipe.zadd(f"{self.prefix}:tasks", {task_id: created})
                pipe.zadd(self.queue_key, {task_id: queue_score(created, priority, self.ageing_s)})
                if owner is not None:
                    pipe.zadd(self.owner_tasks_key(owner), {task_id: created})
                    if max_queued <= 0:
                        pipe.sadd(self.owner_open_key(owner), task_id)
                if "comfy_prompt_id" in comfy:
                    # a prompt id given again takes over its history entry, as in ComfyUI
                    pipe.set(self._comfy_key(comfy["comfy_prompt_id"], owner), task_id)
                    pipe.zadd(self.comfy_prompts_key(owner), {comfy["comfy_prompt_id"]: created})
                    pipe.zadd(self.comfy_open_key, {task_id: comfy.get("number", 0)})
                await pipe.execute()
        self.queued.set()
        task = Task.model_validate({"id": task_id, "updated_ms": created, **fields})
        self._publish(task_id, TaskStatus.PENDING, None, comfy.get("client_id"), {"created_ms": created}, owner)
        return task

    async def _admit_owned(self, owner: str, task_id: str, max_queued: int) -> None:
        """Count the task against its owner's unfinished ones, atomically, or raise QuotaExceeded. A refusal
        first drops ids that are final or gone (a crash between admission and the record leaves one)."""
        key = self.owner_open_key(owner)
        with map_redis_errors():
            if await self._admit(keys=[key], args=[max_queued, task_id]):
                return
            members = sorted(await self.redis.smembers(key))
            found = await self.get_many(members)
            stale = [m for m, t in zip(members, found, strict=True) if t is None or t.status in FINAL_STATUSES]
            if stale:
                await self.redis.srem(key, *stale)
                if await self._admit(keys=[key], args=[max_queued, task_id]):
                    return
        raise QuotaExceeded(f"quota: {max_queued} tasks pending or running at once; wait for some to finish",
                            retry_after_s=5)

    def _publish(self, task_id: str, status: TaskStatus, previous: TaskStatus | None, client_id: str | None,
                 fields: dict[str, Any], owner: str | None = None) -> None:
        if not self.events.listening:
            return
        event = {"type": "task", "id": task_id, "status": status.value,
                 "previous": previous.value if previous else None}
        if client_id:
            event["client_id"] = client_id
        if owner:
            event["owner"] = owner
        for key, value in fields.items():
            if key not in _UNPUBLISHED:
                event[key] = value.value if isinstance(value, TaskStatus) else value
        self.events.publish(event)

    async def get(self, task_id: str) -> Task:
        with map_redis_errors():
            raw = await self.redis.hgetall(self._task_key(task_id))
        if not raw:
            raise NotFound(f"no task {task_id}")
        return _decode(task_id, raw)

    async def get_many(self, task_ids: Sequence[str]) -> builtins.list[Task | None]:
        """The records of ``task_ids`` in one round trip; None for an id with no record."""
        with map_redis_errors():
            async with self.redis.pipeline(transaction=False) as pipe:
                for task_id in task_ids:
                    pipe.hgetall(self._task_key(task_id))
                records = await pipe.execute()
        return [_decode(task_id, raw) if raw else None for task_id, raw in zip(task_ids, records, strict=True)]

    async def list(self, *, status: TaskStatus | None = None, limit: int = 50, offset: int = 0,
                   owner: str | None = None) -> builtins.list[Task]:
        """Newest first; pending tasks in the order they run: those on a backend, those being dispatched, then
        the queue from its head. With ``owner``: that key's tasks only, newest first."""
        if owner is not None:
            return (await self._owned(owner, status, offset + limit))[offset:]
        with map_redis_errors():
            if status == TaskStatus.PENDING:
                ids = await self._pending_ids(limit, offset)
            else:
                index = f"{self.prefix}:tasks" + (f":{status}" if status else "")
                ids = await self.redis.zrevrange(index, offset, offset + limit - 1)
        return [task for task in await self.get_many(ids)
                if task is not None and (status is None or task.status == status)]

    async def _pending_ids(self, limit: int, offset: int) -> builtins.list[str]:
        active = sorted(await self.redis.smembers(self.active_key))  # ULIDs: creation order
        async with self.redis.pipeline(transaction=False) as pipe:
            for task_id in active:
                pipe.hget(self._task_key(task_id), "status")
            statuses = await pipe.execute()
        ahead = [i for i, s in zip(active, statuses, strict=True) if s == TaskStatus.PENDING]
        ahead += await self.redis.zrange(self.claims_key, 0, -1)
        ids = ahead[offset:offset + limit]
        if len(ids) < limit:
            start = max(0, offset - len(ahead))
            ids += await self.redis.zrange(self.queue_key, start, start + limit - len(ids) - 1)
        return ids

    async def _owned(self, owner: str, status: TaskStatus | None, wanted: int | None) -> builtins.list[Task]:
        """An owner's tasks in ``status``, newest first, read a page at a time until ``wanted`` are found."""
        found: list[Task] = []
        start = 0
        page = 500
        while wanted is None or len(found) < wanted:
            with map_redis_errors():
                ids = await self.redis.zrevrange(self.owner_tasks_key(owner), start, start + page - 1)
            if not ids:
                break
            found += [t for t in await self.get_many(ids) if t is not None and (status is None or t.status == status)]
            start += page
        return found if wanted is None else found[:wanted]

    async def count(self, status: TaskStatus | None = None, owner: str | None = None) -> int:
        if owner is not None:
            if status is None:
                with map_redis_errors():
                    return int(await self.redis.zcard(self.owner_tasks_key(owner)))
            return len(await self._owned(owner, status, None))
        with map_redis_errors():
            if status != TaskStatus.PENDING:
                return int(await self.redis.zcard(f"{self.prefix}:tasks" + (f":{status}" if status else "")))
        census = await self._census()
        # pending: queued, claimed, or submitted and not yet started (the active set holds those and the running)
        return census.queued + census.claimed + census.active - census.running

    async def update(self, task_id: str, *, to: TaskStatus | None = None,
                     allowed_from: Sequence[TaskStatus] | None = None, expect: tuple[str, str] | None = None,
                     **fields: Any) -> TaskStatus:
        """Write ``fields`` (None deletes one) and move to ``to`` if the current status allows it and, with
        ``expect=(field, value)``, if that field still holds that value (e.g. the prompt id of the attempt being
        ended). Without ``allowed_from`` a status change follows the transition table, and a bare field update
        applies only to a task that is not final. Returns the status before the change; raises InvalidTransition."""
        if allowed_from is None:
            allowed_from = sources_of(to) if to is not None else []
        pairs = _field_args(fields)
        outcome, previous, client_id, webhook_due, owner = await self.transitions(
            [task_id, ",".join(allowed_from), to.value if to else "", *(expect or ("", "")), len(pairs) // 2,
             *pairs])
        if outcome == "missing":
            raise NotFound(f"no task {task_id}")
        if outcome == "refused":
            raise InvalidTransition(f"task {task_id} is {previous}; cannot move to {to or 'an update'}")
        self._publish(task_id, to or TaskStatus(previous), TaskStatus(previous), client_id,
                      {**fields, "webhook_due": True} if webhook_due else fields, owner)
        return TaskStatus(previous)

    async def _send_transitions(self, transitions: Sequence[builtins.list[Any]]) -> builtins.list[builtins.list[str]]:
        args: list[Any] = [f"{self.prefix}:task:", now_ms()]
        for transition in transitions:
            args += transition
        with map_redis_errors():
            return await self._transitions(keys=self._transition_keys, args=args)

    async def write_progress(self, updates: Sequence[tuple[str, str, dict[str, Any]]]) -> None:
        """Progress fields of running attempts, ``(task id, prompt id, fields)`` each, in one round trip. A task
        that ended, or moved on to another attempt, is left as it is."""
        if not updates:
            return
        args: list[Any] = [f"{self.prefix}:task:", now_ms()]
        for task_id, prompt_id, fields in updates:
            pairs = _field_args(fields)
            args += [task_id, prompt_id, len(pairs) // 2, *pairs]
        with map_redis_errors():
            await self._progress(args=args)
        if self.events.listening:
            for task_id, prompt_id, fields in updates:
                self.events.publish({"type": "progress", "id": task_id, "prompt_id": prompt_id, **fields})

    # ------------------------------------------------------------------ queue
    async def peek(self, count: int) -> tuple[builtins.list[TaskId], int]:
        """The first ``count`` queued ids in queue order, and how many are queued in all."""
        with map_redis_errors():
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.zrange(self.queue_key, 0, count - 1)
                pipe.zcard(self.queue_key)
                ids, total = await pipe.execute()
        return [TaskId(i) for i in ids], int(total)

    async def claim_id(self, task_id: str, lease_s: float) -> bool:
        """Take ``task_id`` out of the queue under a lease of ``lease_s``; False if it is no longer queued."""
        return (await self.claim_ids([task_id], lease_s))[0]

    async def claim_ids(self, task_ids: Sequence[str], lease_s: float) -> builtins.list[bool]:
        """Take each of ``task_ids`` out of the queue under a lease of ``lease_s``, in one round trip: True for
        each one claimed, False for one no longer queued."""
        if not task_ids:
            return []
        with map_redis_errors():
            claimed = await self._claim(keys=[self.queue_key, self.claims_key],
                                        args=[now_ms() + int(lease_s * 1000), *task_ids])
        return [bool(c) for c in claimed]

    async def claim(self, timeout_s: float, lease_s: float) -> TaskId | None:
        """Take the first queued id under a lease of ``lease_s``; None if none came within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.queued.clear()
            ids, _ = await self.peek(1)
            if ids and await self.claim_id(ids[0], lease_s):
                return ids[0]
            if ids:
                continue  # taken meanwhile: look again
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            # woken by a task queued here; polled for one queued by another process
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.queued.wait(), min(left, 0.1))

    async def release_claim(self, task_id: str) -> None:
        with map_redis_errors():
            await self.redis.zrem(self.claims_key, task_id)

    async def requeue(self, task_id: str) -> None:
        """Put a task back in the queue at its place (its priority and creation time): ahead of every task of its
        level queued after it."""
        with map_redis_errors():
            await self._requeue(keys=[self._task_key(task_id), self.queue_key, self.claims_key, self.active_key],
                                args=[task_id, self.level_ms])
        self.queued.set()

    async def return_expired_claims(self) -> builtins.list[TaskId]:
        """Claims whose lease ran out (their dispatch failed half-way) go back to the queue."""
        return await self._return_claims_until(now_ms())

    async def recover_claimed(self) -> int:
        """At start-up: every id a previous run claimed but never submitted goes back to the queue."""
        return len(await self._return_claims_until("+inf"))

    async def _return_claims_until(self, lease_end: Any) -> builtins.list[TaskId]:
        with map_redis_errors():
            ids = await self._return_claims(keys=[self.claims_key, self.queue_key],
                                            args=[lease_end, f"{self.prefix}:task:", self.level_ms])
        if ids:
            self.queued.set()
        return [TaskId(i) for i in ids]

    async def migrate_queue(self) -> int:
        """A queue written by comfyart 0.1 (a list, oldest at the right) becomes the scored queue. The list is
        renamed first and deleted last, so a crash half-way loses nothing: the next start carries on."""
        legacy = f"{self.queue_key}:list"
        with map_redis_errors():
            await self.redis.unlink(f"{self.prefix}:tasks:{TaskStatus.PENDING}")  # earlier versions kept this index
            if await self.redis.type(self.queue_key) == "list":
                await self.redis.rename(self.queue_key, legacy)
            ids = list(reversed(await self.redis.lrange(legacy, 0, -1)))
            for task_id in ids:
                await self._requeue(keys=[self._task_key(task_id), self.queue_key, self.claims_key,
                                          self.active_key], args=[task_id, self.level_ms])
            await self.redis.delete(legacy)
        return len(ids)

    async def queue_length(self) -> int:
        with map_redis_errors():
            return int(await self.redis.zcard(self.queue_key))

    async def _census(self) -> _Census:
        """Where the unfinished tasks are, counted in one transaction: every count of them derives from it."""
        with map_redis_errors():
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.zcard(self.queue_key)
                pipe.zcard(self.claims_key)
                pipe.scard(self.active_key)
                pipe.zcard(f"{self.prefix}:tasks:{TaskStatus.RUNNING}")
                return _Census(*(int(n) for n in await pipe.execute()))

    async def depth(self) -> dict[str, int]:
        """Queue depth for the live events: waiting for a backend, submitted and not started, running."""
        census = await self._census()
        return {"queued": census.queued + census.claimed, "submitted": census.active - census.running,
                "running": census.running}

    async def unfinished(self) -> int:
        """Tasks pending or running: ComfyUI's ``queue_remaining`` for the whole cluster."""
        census = await self._census()
        return census.queued + census.claimed + census.active

    async def waiting(self) -> int:
        """Tasks not yet on a backend: queued or claimed."""
        census = await self._census()
        return census.queued + census.claimed

    async def cancel(self, task_id: str) -> TaskStatus:
        """Mark a pending or running task canceled, which takes it out of the queue, claims and active set (as
        every final status does, in the same script); returns the status it had."""
        return await self.update(task_id, to=TaskStatus.CANCELED, allowed_from=[TaskStatus.PENDING, TaskStatus.RUNNING],
                                 finished_ms=now_ms())

    # ------------------------------------------------------------------ submissions
    async def record_submission(self, task_id: str, *, backend: str, prompt_id: str, attempts: int,
                                resolved_prompt: dict[str, Any] | None = None) -> None:
        """Before POST /prompt: remember where the prompt goes, so a crash right after it can be reconciled, and
        the graph a task queued by workflow name resolved to. Moves the task from claims to active in one step;
        raises InvalidTransition when its claim is gone (lease expired) or it is no longer pending (canceled)."""
        outcome = (await self.record_submissions([Submission(task_id, backend, prompt_id, attempts,
                                                             resolved_prompt)]))[0]
        if outcome is not None:
            raise outcome

    async def record_submissions(self, submissions: Sequence[Submission]) -> builtins.list[Exception | None]:
        """``record_submission`` for several tasks in one round trip: None for each one recorded, else the
        NotFound or InvalidTransition it would have raised."""
        if not submissions:
            return []
        now = now_ms()
        args: list[Any] = [f"{self.prefix}:task:", f"{self.prefix}:prompt:", now]
        for submission in submissions:
            fields: dict[str, Any] = {"backend": submission.backend, "prompt_id": submission.prompt_id,
                                      "attempts": submission.attempts, "error": None, "submitted_ms": now}
            if submission.resolved_prompt is not None:
                fields["prompt"] = submission.resolved_prompt
            pairs = _field_args(fields)
            args += [submission.task_id, submission.prompt_id, len(pairs) // 2, *pairs]
        with map_redis_errors():
            outcomes = await self._record_submissions(keys=[self.claims_key, self.active_key], args=args)
        for submission, outcome in zip(submissions, outcomes, strict=True):
            if outcome == "ok":
                self._publish(submission.task_id, TaskStatus.PENDING, TaskStatus.PENDING, None,
                              {"backend": submission.backend, "prompt_id": submission.prompt_id,
                               "attempts": submission.attempts, "submitted_ms": now})
        return [_submission_refusal(s.task_id, outcome) for s, outcome in zip(submissions, outcomes, strict=True)]

    async def task_for_prompt(self, prompt_id: str) -> TaskId | None:
        with map_redis_errors():
            task_id = await self.redis.get(self._prompt_key(prompt_id))
        return TaskId(task_id) if task_id else None

    # ------------------------------------------------------------------ webhooks
    async def due_webhooks(self, now: int, limit: int) -> builtins.list[TaskId]:
        with map_redis_errors():
            return [TaskId(i) for i in await self.redis.zrangebyscore(self.webhooks_key, "-inf", now, 0, limit)]

    async def webhook_attempted(self, task_id: str, deliveries: builtins.list[dict[str, Any]],
                                next_at: int | None) -> None:
        """Record a delivery attempt; ``next_at`` (ms) schedules another, None ends the deliveries."""
        with map_redis_errors():
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(self._task_key(task_id), "webhook_deliveries", json.dumps(deliveries))
                if next_at is None:
                    pipe.zrem(self.webhooks_key, task_id)
                else:
                    pipe.zadd(self.webhooks_key, {task_id: next_at})
                await pipe.execute()

    # ------------------------------------------------------------------ the ComfyUI-compatible API's view
    async def next_comfy_number(self) -> int:
        with map_redis_errors():
            return int(await self.redis.incr(f"{self.prefix}:comfy:number")) - 1

    async def comfy_task(self, comfy_prompt_id: str, owner: str | None = None) -> Task | None:
        with map_redis_errors():
            task_id = await self.redis.get(self._comfy_key(comfy_prompt_id, owner))
        if not task_id:
            return None
        task = (await self.get_many([task_id]))[0]
        return task if task is not None and task.comfy_prompt_id == comfy_prompt_id else None

    async def comfy_tasks(self, *, newest_first: bool = True, offset: int = 0,
                          limit: int | None = None, owner: str | None = None) -> builtins.list[Task]:
        """Tasks queued through the ComfyUI-compatible API (by ``owner``): a page of them, by creation."""
        end = -1 if limit is None else offset + limit - 1
        with map_redis_errors():
            ids = await (self.redis.zrevrange if newest_first else self.redis.zrange)(
                self.comfy_prompts_key(owner), offset, end)
            async with self.redis.pipeline(transaction=False) as pipe:
                for prompt_id in ids:
                    pipe.get(self._comfy_key(prompt_id, owner))
                task_ids = await pipe.execute()
        found = await self.get_many([t for t in task_ids if t])
        return [t for t in found if t is not None]

    async def open_comfy_tasks(self, owner: str | None = None) -> builtins.list[Task]:
        """Those of ``owner`` not final yet, in queue-number order."""
        with map_redis_errors():
            ids = await self.redis.zrange(self.comfy_open_key, 0, -1)
        return [t for t in await self.get_many(ids)
                if t is not None and t.status not in FINAL_STATUSES and t.owner == owner]

    async def forget_comfy(self, comfy_prompt_ids: Sequence[str] | None = None, owner: str | None = None) -> None:
        """Take prompt ids out of ``owner``'s ComfyUI-compatible history (all of them with None); the task
        records stay."""
        with map_redis_errors():
            if comfy_prompt_ids is None:
                comfy_prompt_ids = await self.redis.zrange(self.comfy_prompts_key(owner), 0, -1)
            if not comfy_prompt_ids:
                return
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.zrem(self.comfy_prompts_key(owner), *comfy_prompt_ids)
                pipe.delete(*[self._comfy_key(p, owner) for p in comfy_prompt_ids])
                await pipe.execute()

    async def open_owned(self, owner: str) -> builtins.list[str]:
        """Ids of ``owner``'s tasks not final yet."""
        with map_redis_errors():
            return sorted(await self.redis.smembers(self.owner_open_key(owner)))

    async def active_tasks(self) -> builtins.list[Task]:
        with map_redis_errors():
            ids = await self.redis.smembers(self.active_key)
        tasks = []
        for task_id in ids:
            try:
                task = await self.get(task_id)
            except NotFound:
                continue
            if task.status not in FINAL_STATUSES:
                tasks.append(task)
        return tasks
