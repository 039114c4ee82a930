"""Idempotency-Keys of ``POST /api/v2/jobs``, in Redis (the rules and the stored values: ``policy.idempotency``;
the keys: ``store.keys``).

How a submission uses it::

    claim = await store.claim(owner, key)           # before anything is submitted; no other await in between
    if not claim.won:                               # -> 422 policy.reuse_error(claim.held)
        ...
    try:
        task = await tasks.create(...)              # or: bind_in(pipe, claim, task_id) inside create's MULTI
    except (InvalidInput, QuotaExceeded, ...):      # definitely no job: the key may be used again
        await store.release(claim)
        raise
    await store.bind(claim, task.id)                # a crash before this leaves the key pending: held for 24 h

Every operation is one Redis command or one Lua script, so two daemons claiming one key at once cannot both win,
and a release or a bind of an old claim (one that expired and was claimed again) never touches the newer one: they
compare the claim's own token.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from comfyart.policy.idempotency import KEY_TTL_S, Held, held, job_value, pending_value
from comfyart.store.keys import Keys
from comfyart.store.redis import map_redis_errors, text

# KEYS: the key   ARGV: the claim's pending value, ttl (s)
# returns {1} when this claim won, else {0, the value already there}
_CLAIM = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  return {1}
end
return {0, redis.call('GET', KEYS[1])}
"""

# KEYS: the key   ARGV: the claim's pending value: deleted only while it is still that claim's
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS: the key   ARGV: the claim's pending value, the job value: set only over that claim, keeping its expiry
_BIND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
  return 1
end
return 0
"""


@dataclass(frozen=True)
class Claim:
    """The answer to a claim: whether this request owns the key (then ``token`` identifies its claim), else what
    the key already stands for."""

    owner: str | None
    key: str
    won: bool
    token: str | None = None  # set when won
    held: Held | None = None  # set when refused


class IdempotencyStore:
    """Idempotency-Keys, per owner (the API key's id; None with auth off: one shared space), for ``ttl_s`` from
    their claim (24 h by the contract; shorter in tests)."""

    def __init__(self, client: aioredis.Redis, keys: Keys, *, ttl_s: int = KEY_TTL_S) -> None:
        self.redis = client
        self.keys = keys
        self.ttl_s = ttl_s
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)
        self._bind = client.register_script(_BIND)

    async def claim(self, owner: str | None, key: str) -> Claim:
        """Claim ``key`` (already checked by ``policy.valid_key``) for one submission, atomically: of any number of
        concurrent claims exactly one wins, and a key stays claimed (across restarts) until released or
        expired."""
        token = secrets.token_hex(8)
        with map_redis_errors():
            answer = await self._claim(keys=[self.keys.idempotency(key, owner)],
                                       args=[pending_value(token), self.ttl_s])
        if int(answer[0]):
            return Claim(owner, key, won=True, token=token)
        return Claim(owner, key, won=False, held=held(text(answer[1])))

    async def release(self, claim: Claim) -> bool:
        """Free the key of a won claim whose submission definitely made no job, so the client may retry with it.
        False when the claim is no longer there (expired, or bound): nothing else is touched."""
        if claim.token is None:
            return False
        with map_redis_errors():
            return bool(await self._release(keys=[self.keys.idempotency(claim.key, claim.owner)],
                                            args=[pending_value(claim.token)]))

    async def bind(self, claim: Claim, task_id: str) -> bool:
        """Record that the won claim made job ``task_id``: a reuse of the key then names it. The expiry stays the
        claim's. False when the claim is no longer there."""
        if claim.token is None:
            return False
        with map_redis_errors():
            return bool(await self._bind(keys=[self.keys.idempotency(claim.key, claim.owner)],
                                         args=[pending_value(claim.token), job_value(task_id)]))

    async def bind_in(self, pipe: Pipeline, claim: Claim, task_id: str) -> None:
        """Queue ``bind`` on ``pipe`` (a ``transaction=True`` pipeline, as ``TaskStore.create`` writes a task):
        the binding then commits with the task record, in the same MULTI/EXEC, and no crash can separate them.
        Its result (1 bound, 0 the claim was gone) is the pipeline's result at this position; a 0 does not undo
        the rest of the transaction."""
        if claim.token is None:
            raise ValueError("only a won claim can be bound to a job")
        await self._bind(keys=[self.keys.idempotency(claim.key, claim.owner)],
                         args=[pending_value(claim.token), job_value(task_id)], client=pipe)

    async def lookup(self, owner: str | None, key: str) -> Held | None:
        """What ``key`` stands for now; None when it is free."""
        with map_redis_errors():
            raw = await self.redis.get(self.keys.idempotency(key, owner))
        return None if raw is None else held(text(raw))
