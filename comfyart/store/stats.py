"""The dashboard's samples of queue depth and throughput, newest first in a capped list, so the charts outlive a
restart of the daemon. The keys are in ``store.keys``."""
from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis

from comfyart.store.keys import Keys
from comfyart.store.redis import map_redis_errors


class StatsSamples:
    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.redis = client
        self.key = keys.stats_samples

    async def add(self, sample: dict[str, Any], *, keep: int) -> None:
        """Add the newest sample; only the newest ``keep`` are kept."""
        with map_redis_errors():
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.lpush(self.key, json.dumps(sample, separators=(",", ":")))
                pipe.ltrim(self.key, 0, keep - 1)
                await pipe.execute()

    async def latest(self, count: int) -> list[dict[str, Any]]:
        """The newest ``count`` samples, newest first."""
        with map_redis_errors():
            raw = await self.redis.lrange(self.key, 0, count - 1)
        samples = []
        for item in raw:
            try:
                sample = json.loads(item)
            except ValueError:  # a hand-edited or foreign entry: skipped, not a 500
                continue
            if isinstance(sample, dict):
                samples.append(sample)
        return samples
