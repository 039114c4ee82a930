"""Per-client quotas: how many tasks a key may have unfinished (counted by the task store when it queues one) and
how fast it may submit (here). Admins and the auth-off caller have none."""
from __future__ import annotations

import math
import time

import redis.asyncio as aioredis
import redis.exceptions

from .auth import Principal
from .config import QuotaConfig
from .errors import QuotaExceeded
from .policy import rate_limit
from .store import map_redis_errors


class Quotas:
    def __init__(self, client: "aioredis.Redis", prefix: str, config: QuotaConfig) -> None:
        self.redis = client
        self.prefix = prefix
        self.config = config

    def max_queued(self, principal: Principal) -> int:
        """0: no limit."""
        if principal.admin:
            return 0
        return principal.max_queued if principal.max_queued is not None else self.config.max_queued

    async def submission(self, principal: Principal) -> None:
        """Count one submission against the caller's rate, or raise QuotaExceeded with when to come back."""
        if principal.admin:
            return
        per_minute = principal.submissions_per_minute
        if per_minute is None:
            per_minute = self.config.submissions_per_minute
        if per_minute <= 0:
            return
        key = f"{self.prefix}:owner:{principal.id}:rate"
        with map_redis_errors():
            async with self.redis.pipeline(transaction=True) as pipe:
                while True:  # optimistic: another submission of the same key in between makes it read again
                    try:
                        await pipe.watch(key)
                        raw = await pipe.get(key)
                        now = int(time.time() * 1000)
                        decision = rate_limit(now_ms=now, tat_ms=float(raw) if raw else None, per_minute=per_minute,
                                              burst=self.config.burst)
                        if not decision.allowed:
                            await pipe.unwatch()
                            raise QuotaExceeded(f"quota: {per_minute:g} submissions a minute; retry in "
                                                f"{decision.retry_after_ms / 1000:.1f} s",
                                                retry_after_s=decision.retry_after_ms / 1000)
                        pipe.multi()
                        # kept as long as it matters: a bucket refills completely by then
                        pipe.set(key, repr(decision.tat_ms), px=max(1000, math.ceil(decision.tat_ms - now)))
                        await pipe.execute()
                        return
                    except redis.exceptions.WatchError:
                        continue
