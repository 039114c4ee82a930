"""What Comfy API v2 keeps of its jobs besides their task records: the list's indexes, the queue position, the
retention sweep's set and marks. A v2 job is a task (``store.tasks``) queued with ``v2`` set.

Keys (``P``: the Redis prefix):
    P:v2:jobs                   zset: every v2 job, scored by created_ms: an admin's list (and every list with
                                auth off)
    P:v2:owner:{o}:jobs         zset: one API key's v2 jobs, scored by created_ms: its list
    P:v2:label:{scope}:{k}={v}  zset: the v2 jobs labelled k=v, scored by created_ms; scope ``*`` (everyone's) and,
                                with auth on, ``o:{owner}``: a filtered list walks the first filter's set only
    P:v2:retained               zset: v2 jobs whose outputs are still kept, scored by created_ms: the sweep reads
                                those created a retention ago, and drops each it expires
Per job (measured, redis 7, ULID members): ~39 B in a zset of up to 128 members (listpack), ~127 B in a large one
(skiplist): with auth on 3 zsets (everyone's, its owner's, retained): ~380 B at scale; +2 entries per label
(~80-250 B); with auth off 2 zsets + 1 entry per label.
The record's own fields (``v2``, ``labels``, ``cancel_asked_ms``, ``expired_ms``) are the task's."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from redis.asyncio.client import Pipeline

from comfyart.models import FINAL_STATUSES, Task, TaskId, TaskStatus
from comfyart.store.fence import FENCED_CALL, fence_arg
from comfyart.store.redis import map_redis_errors, texts
from comfyart.store.tasks import TaskStore

PAGE_READ = 200  # ids read at a time while a page is filled whose records other filters must check

# KEYS: epoch (``store.fence``), the retained set   ARGV: epoch, id, id, ...   (the sweep is a leader's loop)
_FORGET_RETAINED = FENCED_CALL + """
for i = 2, #ARGV do redis.call('ZREM', KEYS[2], ARGV[i]) end
"""


def scopes(owner: str | None) -> list[str]:
    """The label-index scopes a job of ``owner`` is in: everyone's, and its owner's."""
    return ["*"] if owner is None else ["*", f"o:{owner}"]


class JobIndex:
    """The v2 indexes over a TaskStore's records."""

    def __init__(self, tasks: TaskStore) -> None:
        self.tasks = tasks
        self.redis = tasks.redis
        base = f"{tasks.keys.prefix}:v2"
        self.all_jobs, self.retained, self._base = f"{base}:jobs", f"{base}:retained", base
        self._forget_retained = tasks.redis.register_script(_FORGET_RETAINED)

    def owner_jobs(self, owner: str) -> str:
        return f"{self._base}:owner:{owner}:jobs"

    def label(self, scope: str, key: str, value: str) -> str:
        return f"{self._base}:label:{scope}:{key}={value}"

    def listing(self, owner: str | None, filters: Mapping[str, str]) -> str:
        """The zset a list walks: the first filter's set in the caller's scope, or the caller's jobs (``owner``
        None: everyone's, an admin or auth off)."""
        if filters:
            key, value = next(iter(filters.items()))
            return self.label("*" if owner is None else f"o:{owner}", key, value)
        return self.all_jobs if owner is None else self.owner_jobs(owner)

    # ------------------------------------------------------------------ writing
    def index_in(self, pipe: Pipeline, task_id: TaskId, created_ms: int, owner: str | None,
                 labels: Mapping[str, str]) -> None:
        """Queue the new job's index entries on its record's MULTI (``TaskStore.create``'s ``bind``)."""
        entry: dict[str, float] = {str(task_id): created_ms}
        pipe.zadd(self.all_jobs, entry)
        pipe.zadd(self.retained, entry)
        if owner is not None:
            pipe.zadd(self.owner_jobs(owner), entry)
        for key, value in labels.items():
            for scope in scopes(owner):
                pipe.zadd(self.label(scope, key, value), entry)

    async def ask_cancel(self, task_id: str, now_ms: int) -> None:
        """Mark a running job's cancel as asked (every process then shows it ``canceling``); InvalidTransition
        when it no longer runs."""
        await self.tasks.update(task_id, allowed_from=[TaskStatus.RUNNING], cancel_asked_ms=now_ms)

    # ------------------------------------------------------------------ reading
    async def queue_position(self, task_id: str) -> int | None:
        """1-based place in comfyart's queue (ZRANK: O(log n)); None once it left the queue (dispatched)."""
        with map_redis_errors():
            rank = await self.redis.zrank(self.tasks.keys.queue, task_id)
        return None if rank is None else int(cast(int, rank)) + 1

    async def page(self, *, owner: str | None, filters: Mapping[str, str], after: tuple[int, str] | None,
                   limit: int) -> tuple[list[Task], bool]:
        """Up to ``limit`` jobs newest first (then id descending) strictly after ``after``, matching every filter;
        and whether more follow. Reads the first filter's set (or the caller's jobs) from the cursor's time down,
        ``PAGE_READ`` ids at a time; the other filters are checked on the records."""
        source, found = self.listing(owner, filters), list[Task]()
        top: Any = after[0] if after is not None else "+inf"
        offset = 0
        while len(found) <= limit:
            # with one filter at most every id of the set matches: read only what the page still lacks (ties with
            # the cursor and vanished records are made up by the next pass)
            wanted = PAGE_READ if len(filters) > 1 else min(PAGE_READ, limit + 1 - len(found))
            with map_redis_errors():
                batch = await self.redis.zrevrangebyscore(source, top, "-inf", start=offset, num=wanted,
                                                          withscores=True)
            if not batch:
                break
            scored = cast(list[tuple[str, float]], batch)
            offset += len(scored)
            ids = [m for m, score in scored if after is None or (int(score), m) < after]
            found += [t for t in await self.tasks.get_many(ids)
                      if t is not None and all((t.labels or {}).get(k) == v for k, v in filters.items())]
        return found[:limit], len(found) > limit

    # ------------------------------------------------------------------ retention
    async def due_candidates(self, created_before_ms: int, start: int, count: int) -> list[Task]:
        """Retained jobs created at or before ``created_before_ms``, oldest first, ``count`` from ``start``; ids
        whose record is gone leave the set."""
        with map_redis_errors():
            ids = texts(await self.redis.zrangebyscore(self.retained, "-inf", created_before_ms, start=start,
                                                       num=count))
        tasks = await self.tasks.get_many(ids)
        gone = [i for i, t in zip(ids, tasks, strict=True) if t is None]
        if gone:
            await self._forget(gone)
        return [t for t in tasks if t is not None]

    async def mark_expired(self, task_id: str, now_ms: int) -> None:
        """Its outputs are removed: the record says so for good, and the sweep forgets it."""
        await self.tasks.update(task_id, allowed_from=sorted(FINAL_STATUSES), expired_ms=now_ms)
        await self._forget([task_id])

    async def _forget(self, task_ids: list[str]) -> None:
        """The sweep is done with these: they leave the retained set."""
        with map_redis_errors():
            await self._forget_retained(keys=[self.tasks.keys.leader_epoch, self.retained],
                                        args=[fence_arg(), *task_ids])
