"""The ComfyUI-compatible API's view of the tasks it queued: prompt ids as its clients know them (one namespace per
API key), its history and its queue numbers; with ``everyone``, every owner's at once (an admin's view). The records
themselves are ``store.tasks``'; the keys are in ``store.keys``."""
from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis

from comfyart.models import FINAL_STATUSES, Task
from comfyart.store.keys import Keys
from comfyart.store.redis import map_redis_errors, text, texts
from comfyart.store.tasks import TaskStore

# KEYS[1]: the index of every owner's prompts; KEYS[i + 1]: the lookup key of the i-th forgotten prompt id; ARGV[i]:
# its task id. A lookup key another owner's prompt of the same id took over since stays.
_FORGET_EVERYWHERE = """
for i = 1, #ARGV do
  redis.call('zrem', KEYS[1], ARGV[i])
  if redis.call('get', KEYS[i + 1]) == ARGV[i] then redis.call('del', KEYS[i + 1]) end
end
return 0
"""


class ComfyIndex:
    def __init__(self, client: aioredis.Redis, keys: Keys, tasks: TaskStore) -> None:
        self.redis = client
        self.keys = keys
        self.tasks = tasks
        self._forget_everywhere = client.register_script(_FORGET_EVERYWHERE)

    async def next_number(self) -> int:
        """The next ComfyUI queue number."""
        with map_redis_errors():
            return int(await self.redis.incr(self.keys.comfy_number)) - 1

    async def task(self, comfy_prompt_id: str, owner: str | None = None, *, everyone: bool = False) -> Task | None:
        """The task of a prompt id a client knows, within ``owner``'s namespace; with ``everyone``, else the latest
        of any owner's prompts of that id."""
        with map_redis_errors():
            task_id = await self.redis.get(self.keys.comfy_prompt(comfy_prompt_id, owner))
            if not task_id and everyone:
                task_id = await self.redis.get(self.keys.comfy_anyone(comfy_prompt_id))
        if not task_id:
            return None
        task = (await self.tasks.get_many([text(task_id)]))[0]
        return task if task is not None and task.comfy_prompt_id == comfy_prompt_id else None

    async def history(self, *, newest_first: bool = True, offset: int = 0, limit: int | None = None,
                      owner: str | None = None, everyone: bool = False) -> list[Task]:
        """Tasks queued through the ComfyUI-compatible API (by ``owner``, or by any owner with ``everyone``): a page
        of them, by creation."""
        task_ids = await self.history_ids(owner, everyone=everyone, newest_first=newest_first, offset=offset,
                                          limit=limit)
        found = [t for t in await self.tasks.get_many(task_ids) if t is not None]
        return latest_of_each(found) if everyone else found

    async def history_ids(self, owner: str | None, *, everyone: bool = False, newest_first: bool = True,
                          offset: int = 0, limit: int | None = None) -> list[str]:
        """The task ids of ``history``, by creation, without reading a record."""
        end = -1 if limit is None else offset + limit - 1
        read = self.redis.zrevrange if newest_first else self.redis.zrange
        with map_redis_errors():
            if everyone:
                return texts(await read(self.keys.comfy_everyone, offset, end))
            ids = texts(await read(self.keys.comfy_prompts(owner), offset, end))
            async with self.redis.pipeline(transaction=False) as pipe:
                for prompt_id in ids:
                    pipe.get(self.keys.comfy_prompt(prompt_id, owner))
                return [t for t in texts(await pipe.execute()) if t]

    async def open(self, owner: str | None = None, *, everyone: bool = False) -> list[Task]:
        """Those of ``owner`` (of anyone with ``everyone``) not final yet, in queue-number order."""
        with map_redis_errors():
            ids = texts(await self.redis.zrange(self.keys.comfy_open, 0, -1))
        return [t for t in await self.tasks.get_many(ids)
                if t is not None and t.status not in FINAL_STATUSES and (everyone or t.owner == owner)]

    async def open_ids(self) -> set[str]:
        """The task ids of every owner's open prompts, without reading a record."""
        with map_redis_errors():
            return set(texts(await self.redis.zrange(self.keys.comfy_open, 0, -1)))

    async def forget(self, comfy_prompt_ids: Sequence[str] | None = None, owner: str | None = None) -> None:
        """Take prompt ids out of ``owner``'s ComfyUI-compatible history (all of them with None); the task records
        stay."""
        with map_redis_errors():
            if comfy_prompt_ids is None:
                comfy_prompt_ids = texts(await self.redis.zrange(self.keys.comfy_prompts(owner), 0, -1))
            if not comfy_prompt_ids:
                return
            prompt_keys = [self.keys.comfy_prompt(p, owner) for p in comfy_prompt_ids]
            # auth off (no owner): nothing of it is in the admin's view
            task_ids = texts(await self.redis.mget(prompt_keys)) if owner is not None else []
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.zrem(self.keys.comfy_prompts(owner), *comfy_prompt_ids)
                pipe.delete(*prompt_keys)
                await pipe.execute()
            known = [(p, t) for p, t in zip(comfy_prompt_ids, task_ids, strict=False) if t]
            if known:  # out of the admin's view too
                await self._forget_everywhere(keys=[self.keys.comfy_everyone,
                                                    *[self.keys.comfy_anyone(p) for p, _ in known]],
                                              args=[t for _, t in known])


def latest_of_each(tasks: list[Task]) -> list[Task]:
    """``tasks`` less those whose owner gave their prompt id again since (its own history forgot them)."""
    latest: dict[tuple[str | None, str | None], Task] = {}
    for task in tasks:
        key = (task.owner, task.comfy_prompt_id)
        if key not in latest or (task.created_ms, task.id) > (latest[key].created_ms, latest[key].id):
            latest[key] = task
    return [t for t in tasks if latest[(t.owner, t.comfy_prompt_id)] is t]
