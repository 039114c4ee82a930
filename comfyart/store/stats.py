"""The dashboard's samples of queue depth and throughput, newest first in a capped list, so the charts outlive a
restart of the daemon. The keys are in ``store.keys``."""
from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis

from comfyart.store.fence import FENCED_CALL, fence_arg
from comfyart.store.keys import Keys
from comfyart.store.redis import map_redis_errors

# KEYS: epoch (``store.fence``), the samples   ARGV: epoch, the sample (JSON), how many to keep
_ADD_SAMPLE = FENCED_CALL + """
redis.call('LPUSH', KEYS[2], ARGV[2])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)
"""


class StatsSamples:
    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.redis = client
        self.key = keys.stats_samples
        self._epoch_key = keys.leader_epoch
        self._add = client.register_script(_ADD_SAMPLE)

    async def add(self, sample: dict[str, Any], *, keep: int) -> None:
        """Add the newest sample; only the newest ``keep`` are kept. Fenced: the sampler is a leader's loop."""
        with map_redis_errors():
            await self._add(keys=[self._epoch_key, self.key],
                            args=[fence_arg(), json.dumps(sample, separators=(",", ":")), keep])

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
