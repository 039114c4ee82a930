"""Webhook deliveries that are due: a final status schedules one in the transition itself (``store.tasks``), each
attempt is recorded in the task and reschedules or ends them. The keys are in ``store.keys``."""
from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis

from comfyart.models import TaskId
from comfyart.store.fence import FENCED_CALL, fence_arg
from comfyart.store.keys import Keys
from comfyart.store.redis import map_redis_errors, texts

# KEYS: epoch (``store.fence``), the task, the deliveries due   ARGV: epoch, id, the deliveries (JSON), when the
# next attempt is due (ms; '' = no more)
_ATTEMPTED = FENCED_CALL + """
redis.call('HSET', KEYS[2], 'webhook_deliveries', ARGV[3])
if ARGV[4] == '' then redis.call('ZREM', KEYS[3], ARGV[2]) else redis.call('ZADD', KEYS[3], ARGV[4], ARGV[2]) end
"""


class Deliveries:
    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys
        self._attempted = client.register_script(_ATTEMPTED)

    async def due(self, now_ms: int, limit: int) -> list[TaskId]:
        """Tasks whose next delivery attempt is due at ``now_ms``, the longest due first."""
        with map_redis_errors():
            due = texts(await self.redis.zrangebyscore(self.keys.webhooks, "-inf", now_ms, 0, limit))
        return [TaskId(i) for i in due]

    async def attempted(self, task_id: str, deliveries: list[dict[str, Any]], next_at_ms: int | None) -> None:
        """Record a delivery attempt; ``next_at_ms`` schedules another, None ends the deliveries. Fenced: the
        webhook sender is a leader's loop."""
        with map_redis_errors():
            await self._attempted(keys=[self.keys.leader_epoch, self.keys.task(task_id), self.keys.webhooks],
                                  args=[fence_arg(), task_id, json.dumps(deliveries),
                                        "" if next_at_ms is None else next_at_ms])
