"""The ComfyUI-compatible API's view of the tasks it queued: prompt ids as its clients know them (one namespace per
API key), its history and its queue numbers. The records themselves are ``store.tasks``'; the keys are in
``store.keys``."""
from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis

from comfyart.models import FINAL_STATUSES, Task
from comfyart.store.keys import Keys
from comfyart.store.redis import map_redis_errors, text, texts
from comfyart.store.tasks import TaskStore


class ComfyIndex:
    def __init__(self, client: aioredis.Redis, keys: Keys, tasks: TaskStore) -> None:
        self.redis = client
        self.keys = keys
        self.tasks = tasks

    async def next_number(self) -> int:
        """The next ComfyUI queue number."""
        with map_redis_errors():
            return int(await self.redis.incr(self.keys.comfy_number)) - 1

    async def task(self, comfy_prompt_id: str, owner: str | None = None) -> Task | None:
        """The task of a prompt id a client knows, within ``owner``'s namespace."""
        with map_redis_errors():
            task_id = await self.redis.get(self.keys.comfy_prompt(comfy_prompt_id, owner))
        if not task_id:
            return None
        task = (await self.tasks.get_many([text(task_id)]))[0]
        return task if task is not None and task.comfy_prompt_id == comfy_prompt_id else None

    async def history(self, *, newest_first: bool = True, offset: int = 0, limit: int | None = None,
                      owner: str | None = None) -> list[Task]:
        """Tasks queued through the ComfyUI-compatible API (by ``owner``): a page of them, by creation."""
        end = -1 if limit is None else offset + limit - 1
        with map_redis_errors():
            ids = texts(await (self.redis.zrevrange if newest_first else self.redis.zrange)(
                self.keys.comfy_prompts(owner), offset, end))
            async with self.redis.pipeline(transaction=False) as pipe:
                for prompt_id in ids:
                    pipe.get(self.keys.comfy_prompt(prompt_id, owner))
                task_ids = texts(await pipe.execute())
        found = await self.tasks.get_many([t for t in task_ids if t])
        return [t for t in found if t is not None]

    async def open(self, owner: str | None = None) -> list[Task]:
        """Those of ``owner`` not final yet, in queue-number order."""
        with map_redis_errors():
            ids = texts(await self.redis.zrange(self.keys.comfy_open, 0, -1))
        return [t for t in await self.tasks.get_many(ids)
                if t is not None and t.status not in FINAL_STATUSES and t.owner == owner]

    async def forget(self, comfy_prompt_ids: Sequence[str] | None = None, owner: str | None = None) -> None:
        """Take prompt ids out of ``owner``'s ComfyUI-compatible history (all of them with None); the task records
        stay."""
        with map_redis_errors():
            if comfy_prompt_ids is None:
                comfy_prompt_ids = texts(await self.redis.zrange(self.keys.comfy_prompts(owner), 0, -1))
            if not comfy_prompt_ids:
                return
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.zrem(self.keys.comfy_prompts(owner), *comfy_prompt_ids)
                pipe.delete(*[self.keys.comfy_prompt(p, owner) for p in comfy_prompt_ids])
                await pipe.execute()
