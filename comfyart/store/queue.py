"""The task queue in Redis: which pending tasks wait (in priority order), which are claimed by the dispatcher, and
which are on a backend. A pending task is always in exactly one of the queue, the claims and the active set; a
final status takes it out of all three (``store.tasks``). The keys are in ``store.keys``."""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import redis.asyncio as aioredis

from comfyart.bus import EventHub
from comfyart.clock import now_ms
from comfyart.errors import InvalidTransition, NotFound
from comfyart.models import TaskId, TaskStatus
from comfyart.policy.priority import STRICT_LEVEL_MS, queue_score
from comfyart.store.codec import WRITE_FIELDS, field_args, task_event
from comfyart.store.eventlog import EVENTS_KEPT, LOG_EVENT, published, stream_args
from comfyart.store.fence import FENCED_CALL, fence_arg
from comfyart.store.keys import Keys
from comfyart.store.redis import map_redis_errors, text, text_set, texts

# Every script the leader's loops run here is fenced (``store.fence``): KEYS[1] the fencing epoch, ARGV[1] the
# caller's epoch ('' = none).

# KEYS: epoch, queue, claims   ARGV: epoch, lease end (ms), id, id, ...   returns 1 per id claimed, 0 per id no
# longer queued
_CLAIM = FENCED_CALL + """
local claimed = {}
for i = 3, #ARGV do
  if redis.call('ZREM', KEYS[2], ARGV[i]) == 1 then
    redis.call('ZADD', KEYS[3], ARGV[2], ARGV[i])
    claimed[#claimed + 1] = 1
  else
    claimed[#claimed + 1] = 0
  end
end
return claimed
"""

# a task's place in the queue, as policy.priority.queue_score computes it; ARGV[level] is the ms one level is worth
_SCORE = """
local function score(task_key, level_ms)
  local fields = redis.call('HMGET', task_key, 'created_ms', 'priority')
  return string.format('%.0f', tonumber(fields[1] or '0') - tonumber(fields[2] or '0') * tonumber(level_ms))
end
"""

# KEYS: epoch, task, queue, claims, active   ARGV: epoch, id, level ms
_REQUEUE = FENCED_CALL + _SCORE + """
redis.call('ZREM', KEYS[4], ARGV[2])
redis.call('SREM', KEYS[5], ARGV[2])
redis.call('ZADD', KEYS[3], score(KEYS[2], ARGV[3]), ARGV[2])
"""

# KEYS: epoch, claims   ARGV: epoch, id
_RELEASE_CLAIM = FENCED_CALL + """
redis.call('ZREM', KEYS[2], ARGV[2])
"""

# KEYS: epoch, claims, queue   ARGV: epoch, claims whose lease ends at or before this (ms, or '+inf') go back to
# the queue, task key prefix, level ms
_RETURN_CLAIMS = FENCED_CALL + _SCORE + """
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[2])
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZADD', KEYS[3], score(ARGV[3] .. id, ARGV[4]), id)
end
return ids
"""

# KEYS: epoch, claims, active   ARGV: epoch, task key prefix, prompt key prefix, now_ms, event stream and its cap
# (``store.eventlog``), then per task: id, prompt id, the event's fields (JSON), number of field/value pairs, field,
# value, ...   Returns one outcome per task.
# Only a pending task whose claim this dispatcher still holds is submitted: an expired lease or a cancel wins.
_RECORD_SUBMISSIONS = FENCED_CALL + WRITE_FIELDS + LOG_EVENT + """
local outcomes = {}
local i = 7
while i <= #ARGV do
  local id, prompt_id, data, pairs = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  local task_key = ARGV[2] .. id
  local first, last = i + 4, i + 3 + 2 * pairs
  i = last + 1
  local status = redis.call('HGET', task_key, 'status')
  local outcome = 'ok'
  if not status then outcome = 'missing'
  elseif status ~= 'pending' then outcome = status
  elseif redis.call('ZSCORE', KEYS[2], id) == false then outcome = 'unclaimed' end
  redis.call('ZREM', KEYS[2], id)
  if outcome == 'ok' then
    write_fields(task_key, first, last, ARGV[4])
    redis.call('SET', ARGV[3] .. prompt_id, id)
    redis.call('SADD', KEYS[3], id)
    log_event(ARGV[5], ARGV[6], 'task', id, 'pending', 'pending', '', '', '', data)
  end
  outcomes[#outcomes + 1] = outcome
end
return outcomes
"""

# KEYS: the queue, the task-key prefix   ARGV: most entries to read
# returns priority, count, priority, count, ..., then "beyond_scan", the entries not read
_BY_PRIORITY = """
local ids = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
local counts = {}
for _, id in ipairs(ids) do
  local priority = redis.call('HGET', KEYS[2] .. id, 'priority') or '0'
  counts[priority] = (counts[priority] or 0) + 1
end
local flat = {}
for priority, count in pairs(counts) do
  flat[#flat + 1] = priority
  flat[#flat + 1] = count
end
flat[#flat + 1] = 'beyond_scan'
flat[#flat + 1] = math.max(0, redis.call('ZCARD', KEYS[1]) - #ids)
return flat
"""


class Census(NamedTuple):
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


class TaskQueue:
    def __init__(self, client: aioredis.Redis, keys: Keys, *, events: EventHub, ageing_s: float = 0.0,
                 stream: str = "", events_kept: int = EVENTS_KEPT) -> None:
        self.redis = client
        self.keys = keys
        # a recorded submission is published as a task event: here, or logged on ``stream`` (``store.eventlog``)
        self.events = events
        self.stream = stream
        self.events_kept = events_kept  # the stream's cap (cluster.events_kept)
        self.ageing_s = ageing_s  # a queued task gains one priority level per this long (0: strict priority)
        self.wakeups: list[asyncio.Event] = []  # set whenever a task enters the queue: the loops that wait on it
        self._claim = client.register_script(_CLAIM)
        self._requeue = client.register_script(_REQUEUE)
        self._release_claim = client.register_script(_RELEASE_CLAIM)
        self._return_claims = client.register_script(_RETURN_CLAIMS)
        self._record_submissions = client.register_script(_RECORD_SUBMISSIONS)
        self._by_priority = client.register_script(_BY_PRIORITY)

    @property
    def level_ms(self) -> int:
        return int(self.ageing_s * 1000) if self.ageing_s > 0 else STRICT_LEVEL_MS

    def score(self, created_ms: int, priority: int) -> int:
        return queue_score(created_ms, priority, self.ageing_s)

    def note_queued(self) -> None:
        """Wake whoever waits for work: a task entered the queue."""
        for event in self.wakeups:
            event.set()

    # ------------------------------------------------------------------ the head of the queue
    async def peek(self, count: int) -> tuple[list[TaskId], int]:
        """The first ``count`` queued ids in queue order, and how many are queued in all."""
        with map_redis_errors():
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.zrange(self.keys.queue, 0, count - 1)
                pipe.zcard(self.keys.queue)
                ids, total = await pipe.execute()
        return [TaskId(i) for i in ids], int(total)

    async def claim_id(self, task_id: str, lease_s: float) -> bool:
        """Take ``task_id`` out of the queue under a lease of ``lease_s``; False if it is no longer queued."""
        return (await self.claim_ids([task_id], lease_s))[0]

    async def claim_ids(self, task_ids: Sequence[str], lease_s: float) -> list[bool]:
        """Take each of ``task_ids`` out of the queue under a lease of ``lease_s``, in one round trip: True for
        each one claimed, False for one no longer queued."""
        if not task_ids:
            return []
        with map_redis_errors():
            claimed = await self._claim(keys=[self.keys.leader_epoch, self.keys.queue, self.keys.claims],
                                        args=[fence_arg(), now_ms() + int(lease_s * 1000), *task_ids])
        return [bool(c) for c in claimed]

    async def claim(self, timeout_s: float, lease_s: float) -> TaskId | None:
        """Take the first queued id under a lease of ``lease_s``; None if none came within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        queued = asyncio.Event()
        self.wakeups.append(queued)
        try:
            while True:
                queued.clear()
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
                    await asyncio.wait_for(queued.wait(), min(left, 0.1))
        finally:
            self.wakeups.remove(queued)

    async def release_claim(self, task_id: str) -> None:
        """Drop a claim (its task failed before it was submitted)."""
        with map_redis_errors():
            await self._release_claim(keys=[self.keys.leader_epoch, self.keys.claims], args=[fence_arg(), task_id])

    async def requeue(self, task_id: str) -> None:
        """Put a task back in the queue at its place (its priority and creation time): ahead of every task of its
        level queued after it."""
        with map_redis_errors():
            await self._requeue_one(task_id)
        self.note_queued()

    async def _requeue_one(self, task_id: str) -> None:
        await self._requeue(keys=[self.keys.leader_epoch, self.keys.task(task_id), self.keys.queue,
                                  self.keys.claims, self.keys.active], args=[fence_arg(), task_id, self.level_ms])

    async def return_expired_claims(self) -> list[TaskId]:
        """Claims whose lease ran out (their dispatch failed half-way) go back to the queue."""
        return await self._return_claims_until(now_ms())

    async def recover_claimed(self) -> int:
        """At start-up: every id a previous run claimed but never submitted goes back to the queue."""
        return len(await self._return_claims_until("+inf"))

    async def _return_claims_until(self, lease_end: Any) -> list[TaskId]:
        with map_redis_errors():
            ids = await self._return_claims(keys=[self.keys.leader_epoch, self.keys.claims, self.keys.queue],
                                            args=[fence_arg(), lease_end, self.keys.task_prefix, self.level_ms])
        if ids:
            self.note_queued()
        return [TaskId(i) for i in ids]

    async def migrate(self) -> int:
        """A queue written by comfyart 0.1 (a list, oldest at the right) becomes the scored queue. The list is
        renamed first and deleted last, so a crash half-way loses nothing: the next start carries on."""
        legacy = self.keys.legacy_queue
        with map_redis_errors():
            await self.redis.unlink(self.keys.in_status(TaskStatus.PENDING))  # earlier versions kept this index
            if await self.redis.type(self.keys.queue) == "list":
                await self.redis.rename(self.keys.queue, legacy)
            ids = list(reversed(texts(await self.redis.lrange(legacy, 0, -1))))
            for task_id in ids:
                await self._requeue_one(task_id)
            await self.redis.delete(legacy)
        return len(ids)

    # ------------------------------------------------------------------ counts
    async def length(self) -> int:
        with map_redis_errors():
            return int(await self.redis.zcard(self.keys.queue))

    async def census(self) -> Census:
        """Where the unfinished tasks are, counted in one transaction: every count of them derives from it."""
        with map_redis_errors():
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.zcard(self.keys.queue)
                pipe.zcard(self.keys.claims)
                pipe.scard(self.keys.active)
                pipe.zcard(self.keys.in_status(TaskStatus.RUNNING))
                return Census(*(int(n) for n in await pipe.execute()))

    async def depth(self) -> dict[str, int]:
        """Queue depth for the live events: waiting for a backend, submitted and not started, running."""
        census = await self.census()
        return {"queued": census.queued + census.claimed, "submitted": census.active - census.running,
                "running": census.running}

    async def unfinished(self) -> int:
        """Tasks pending or running: ComfyUI's ``queue_remaining`` for the whole cluster."""
        census = await self.census()
        return census.queued + census.claimed + census.active

    async def waiting(self) -> int:
        """Tasks not yet on a backend: queued or claimed."""
        census = await self.census()
        return census.queued + census.claimed

    async def by_priority(self, scan: int) -> dict[str, int]:
        """Queued tasks by priority, read at the head of the queue, ``scan`` entries at most; the rest are counted
        as ``beyond_scan``."""
        with map_redis_errors():
            flat = await self._by_priority(keys=[self.keys.queue, self.keys.task_prefix], args=[scan])
        return {str(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}

    async def pending_ids(self, limit: int, offset: int) -> list[str]:
        """Pending tasks in the order they run: those on a backend, those being dispatched, then the queue from
        its head."""
        with map_redis_errors():
            active = sorted(text_set(await self.redis.smembers(self.keys.active)))  # ULIDs: creation order
            async with self.redis.pipeline(transaction=False) as pipe:
                for task_id in active:
                    pipe.hget(self.keys.task(task_id), "status")
                statuses = await pipe.execute()
            ahead = [i for i, s in zip(active, statuses, strict=True) if s == TaskStatus.PENDING]
            ahead += texts(await self.redis.zrange(self.keys.claims, 0, -1))
            ids = ahead[offset:offset + limit]
            if len(ids) < limit:
                start = max(0, offset - len(ahead))
                ids += texts(await self.redis.zrange(self.keys.queue, start, start + limit - len(ids) - 1))
        return ids

    async def active_ids(self) -> list[str]:
        """Tasks submitted to a backend and not final."""
        with map_redis_errors():
            return sorted(text_set(await self.redis.smembers(self.keys.active)))

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

    async def record_submissions(self, submissions: Sequence[Submission]) -> list[Exception | None]:
        """``record_submission`` for several tasks in one round trip: None for each one recorded, else the
        NotFound or InvalidTransition it would have raised."""
        if not submissions:
            return []
        now = now_ms()
        args: list[Any] = [fence_arg(), self.keys.task_prefix, self.keys.prompt_prefix, now,
                           *stream_args(self.stream, self.events_kept)]
        for submission in submissions:
            fields: dict[str, Any] = {"backend": submission.backend, "prompt_id": submission.prompt_id,
                                      "attempts": submission.attempts, "error": None, "submitted_ms": now}
            if submission.resolved_prompt is not None:
                fields["prompt"] = submission.resolved_prompt
            pairs = field_args(fields)
            data = published({key: value for key, value in fields.items() if key != "error"}) if self.stream else ""
            args += [submission.task_id, submission.prompt_id, data, len(pairs) // 2, *pairs]
        with map_redis_errors():
            outcomes = await self._record_submissions(keys=[self.keys.leader_epoch, self.keys.claims,
                                                            self.keys.active], args=args)
        if self.events.listening and not self.stream:
            for submission, outcome in zip(submissions, outcomes, strict=True):
                if outcome == "ok":
                    self.events.publish(task_event(
                        submission.task_id, TaskStatus.PENDING, TaskStatus.PENDING, None,
                        {"backend": submission.backend, "prompt_id": submission.prompt_id,
                         "attempts": submission.attempts, "submitted_ms": now}))
        return [_submission_refusal(s.task_id, outcome) for s, outcome in zip(submissions, outcomes, strict=True)]

    async def task_of_prompt(self, prompt_id: str) -> TaskId | None:
        """The task a ComfyUI prompt id (one comfyart minted) was submitted for."""
        with map_redis_errors():
            task_id = await self.redis.get(self.keys.prompt(prompt_id))
        return TaskId(text(task_id)) if task_id else None
