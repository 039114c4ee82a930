"""Per-client quotas: how many tasks a key may have unfinished (counted by the task store when it queues one) and
how fast it may submit (here: ``policy.rate_limit``'s rule, run as a Redis script so that a check is one round trip
and atomic across daemons). Admins and the auth-off caller have none."""
from __future__ import annotations

import time

import redis.asyncio as aioredis

from comfyart.auth import Principal
from comfyart.config.sections import QuotaConfig
from comfyart.errors import QuotaExceeded, whole_seconds
from comfyart.store.keys import Keys
from comfyart.store.redis import map_redis_errors

# policy.rate_limit, in one round trip: KEYS: the key's theoretical arrival time   ARGV: now (ms), per minute, burst
# returns {1, 0} when allowed (and the new time is kept), {0, ms to wait} when not (nothing changes)
_RATE = """
local now, per_minute, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local interval = 60000 / per_minute
local tat = tonumber(redis.call('GET', KEYS[1]) or ARGV[1])
local new_tat = math.max(tat, now) + interval
local tolerance = interval * math.max(1, burst)
if new_tat - now > tolerance then
  return {0, math.max(1, math.ceil(new_tat - tolerance - now))}
end
redis.call('SET', KEYS[1], string.format('%.17g', new_tat), 'PX', math.max(1000, math.ceil(new_tat - now)))
return {1, 0}
"""


SIGNIN_PER_MINUTE = 20.0  # sign-in attempts from one address: plenty for a person, nothing for a guesser
SIGNIN_BURST = 10


class Quotas:
    def __init__(self, client: aioredis.Redis, keys: Keys, config: QuotaConfig) -> None:
        self.redis = client
        self.keys = keys
        self.config = config
        self._rate = client.register_script(_RATE)

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
        key = self.keys.owner_rate(principal.id)
        with map_redis_errors():
            allowed, retry_after_ms = await self._rate(keys=[key], args=[int(time.time() * 1000), repr(per_minute),
                                                                         self.config.burst])
        if not int(allowed):
            retry_after_s = int(retry_after_ms) / 1000
            # in the whole seconds of the Retry-After header, so the message and the header never disagree
            raise QuotaExceeded(f"quota: {per_minute:g} submissions a minute; retry in "
                                f"{whole_seconds(retry_after_s)} s", retry_after_s=retry_after_s)

    async def sign_in_attempt(self, address: str) -> None:
        """Count one attempt to sign in from ``address`` (any outcome), or raise QuotaExceeded with when to come
        back: keys and passwords are long, and a guesser gets 20 tries a minute."""
        with map_redis_errors():
            allowed, retry_after_ms = await self._rate(keys=[self.keys.signin_rate(address)],
                                                       args=[int(time.time() * 1000), repr(SIGNIN_PER_MINUTE),
                                                             SIGNIN_BURST])
        if not int(allowed):
            retry_after_s = int(retry_after_ms) / 1000
            raise QuotaExceeded(f"too many sign-in attempts from this address; retry in "
                                f"{whole_seconds(retry_after_s)} s", retry_after_s=retry_after_s)
