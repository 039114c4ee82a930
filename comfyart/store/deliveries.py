"""Webhook deliveries that are due: a final status schedules one in the transition itself (``store.tasks``), each
attempt is recorded in the task and reschedules or ends them. The keys are in ``store.keys``."""
from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis

from comfyart.models import TaskId
from comfyart.store.keys import Keys
from comfyart.store.redis import map_redis_errors, texts


class Deliveries:
    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys

    async def due(self, now_ms: int, limit: int) -> list[TaskId]:
        """Tasks whose next delivery attempt is due at ``now_ms``, the longest due first."""
        with map_redis_errors():
            due = texts(await self.redis.zrangebyscore(self.keys.webhooks, "-inf", now_ms, 0, limit))
        return [TaskId(i) for i in due]

    async def attempted(self, task_id: str, deliveries: list[dict[str, Any]], next_at_ms: int | None) -> None:
        """Record a delivery attempt; ``next_at_ms`` schedules another, None ends the deliveries."""
        with map_redis_errors():
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(self.keys.task(task_id), "webhook_deliveries", json.dumps(deliveries))
                if next_at_ms is None:
                    pipe.zrem(self.keys.webhooks, task_id)
                else:
                    pipe.zadd(self.keys.webhooks, {task_id: next_at_ms})
                await pipe.execute()
