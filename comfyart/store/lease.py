"""The leader's lease and the fencing epoch in Redis (keys in ``store.keys``): several ``comfyart serve`` share one
Redis and one of them at a time, the holder of ``P:leader``, runs the loops that must be single.

- ``P:leader``: ``"{replica} {epoch} {since_ms}"``, expiring with the lease (PX). Replica names hold no space
  (``cluster.name``), so the first word is the holder.
- ``P:leader:epoch``: the fencing epoch, raised by every acquire and never expiring. Each new epoch is at least the
  Redis server's clock in ms, so epochs keep increasing even when Redis lost the counter (a restart from an older
  snapshot, an AOF ``everysec`` loss): a leader of a forgotten epoch can never match a later one.
- ``P:leader:history``: the latest elections, newest first, JSON ``{"epoch", "replica", "since_ms", "reason"}``,
  capped at ``HISTORY_KEPT``.

All three change only in the Lua scripts below, each atomic. ``since_ms`` is the Redis server's clock too.

Connections: the acquire, renew and release go through a small pool of their own (``LEASE_CONNECTIONS``), never the
shared pool: a busy tracker can hold every shared connection, and a renew waiting behind it would lose the lease of a
healthy leader. Reads (``holder``, ``epoch``, ``history``: the cluster API) use the shared client.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from comfyart.store.keys import Keys
from comfyart.store.redis import map_redis_errors, text, texts

HISTORY_KEPT = 50
LEASE_CONNECTIONS = 2  # a renew and a release (SIGTERM handover) may overlap; nothing else uses them
LEASE_CONNECTION_WAIT_S = 5.0

_HOLDS = """
local function holds(value, replica)
  return value and string.sub(value, 1, #replica + 1) == replica .. ' '
end
"""

# KEYS: leader, epoch, history   ARGV: replica, lease_ms, reason, history kept
# returns {1, epoch, since_ms} when taken, {0, the lease's value} when another replica holds it
_ACQUIRE = _HOLDS + """
if redis.replicate_commands then redis.replicate_commands() end  -- TIME before writes (Redis < 5)
local held = redis.call('GET', KEYS[1])
if held and not holds(held, ARGV[1]) then return {0, held} end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local epoch = (tonumber(redis.call('GET', KEYS[2]) or '') or 0) + 1
if epoch < now_ms then epoch = now_ms end
epoch = string.format('%.0f', epoch)
local since = string.format('%.0f', now_ms)
redis.call('SET', KEYS[2], epoch)
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. epoch .. ' ' .. since, 'PX', ARGV[2])
redis.call('LPUSH', KEYS[3], string.format('{"epoch":%s,"replica":%s,"since_ms":%s,"reason":%s}',
  epoch, cjson.encode(ARGV[1]), since, cjson.encode(ARGV[3])))
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[4]) - 1)
return {1, epoch, since}
"""

# KEYS: leader, epoch   ARGV: replica, epoch, lease_ms, since_ms ('': now)   returns 1 when the lease is this term's
# A lease gone while the epoch is still this term's (Redis restarted from a snapshot taken before the lease, or
# the key was lost) is set again: nobody was elected meanwhile, or the epoch would have moved.
_RENEW = """
if redis.replicate_commands then redis.replicate_commands() end  -- TIME before writes (Redis < 5)
local mine = ARGV[1] .. ' ' .. ARGV[2] .. ' '
local held = redis.call('GET', KEYS[1])
if held then
  if string.sub(held, 1, #mine) ~= mine then return 0 end
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return 0 end
local since = ARGV[4]
if since == '' then
  local t = redis.call('TIME')
  since = string.format('%.0f', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
end
redis.call('SET', KEYS[1], mine .. since, 'PX', ARGV[3])
return 1
"""

# KEYS: leader   ARGV: replica, epoch   returns 1 when this term's lease was deleted
_RELEASE = """
local held = redis.call('GET', KEYS[1])
local mine = ARGV[1] .. ' ' .. ARGV[2] .. ' '
if held and string.sub(held, 1, #mine) == mine then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""


@dataclass(frozen=True)
class Lease:
    """One term of one replica: its fencing epoch, and when it began (ms, the Redis server's clock)."""

    replica: str
    epoch: int
    since_ms: int


def parse_lease(value: str) -> Lease | None:
    """``P:leader``'s value; None when it is not one comfyart wrote."""
    parts = value.split(" ")
    if len(parts) != 3 or not parts[0]:
        return None
    try:
        return Lease(parts[0], int(parts[1]), int(parts[2]))
    except ValueError:
        return None


def dedicated_client(client: aioredis.Redis, connections: int = LEASE_CONNECTIONS) -> aioredis.Redis:
    """A client of the same Redis as ``client`` with a small connection pool of its own."""
    shared = client.connection_pool
    kwargs = {key: value for key, value in shared.connection_kwargs.items()
              if key not in ("max_connections", "timeout")}
    pool = aioredis.BlockingConnectionPool(connection_class=shared.connection_class, max_connections=connections,
                                           timeout=LEASE_CONNECTION_WAIT_S, **kwargs)
    return aioredis.Redis.from_pool(pool)


class LeaseStore:
    """The lease scripts over ``lease_client`` (by default a dedicated pool made from ``client``; ``aclose``
    closes it), the reads over ``client``."""

    def __init__(self, client: aioredis.Redis, keys: Keys, *, lease_client: aioredis.Redis | None = None) -> None:
        self.redis = client
        self.keys = keys
        self._owns_lease_client = lease_client is None
        self.lease_redis = dedicated_client(client) if lease_client is None else lease_client
        self._acquire = self.lease_redis.register_script(_ACQUIRE)
        self._renew = self.lease_redis.register_script(_RENEW)
        self._release = self.lease_redis.register_script(_RELEASE)

    async def acquire(self, replica: str, lease_ms: int, reason: str) -> Lease | None:
        """Take the lease for ``lease_ms`` under a new epoch, unless another replica holds it (None). A lease held
        under this same name (a predecessor process of this replica, killed) is taken at once."""
        with map_redis_errors():
            reply = await self._acquire(keys=[self.keys.leader, self.keys.leader_epoch, self.keys.leader_history],
                                        args=[replica, lease_ms, reason, HISTORY_KEPT])
        if int(reply[0]) != 1:
            return None
        return Lease(replica, int(reply[1]), int(reply[2]))

    async def renew(self, replica: str, epoch: int, lease_ms: int, *, since_ms: int | None = None) -> bool:
        """Extend this term's lease to ``lease_ms`` from now; False when the term is over (another epoch). Should
        the lease have vanished while the epoch stayed this term's, it is set again, with ``since_ms`` (None: the
        Redis server's clock now)."""
        with map_redis_errors():
            reply = await self._renew(keys=[self.keys.leader, self.keys.leader_epoch],
                                      args=[replica, epoch, lease_ms, '' if since_ms is None else since_ms])
        return int(reply) == 1

    async def release(self, replica: str, epoch: int) -> bool:
        """Delete the lease if it is still this term's (a standby then takes it at its next try)."""
        with map_redis_errors():
            reply = await self._release(keys=[self.keys.leader], args=[replica, epoch])
        return int(reply) == 1

    async def holder(self) -> Lease | None:
        """Who leads now (None: nobody, or a value comfyart did not write)."""
        with map_redis_errors():
            value = await self.redis.get(self.keys.leader)
        return None if value is None else parse_lease(text(value))

    async def epoch(self) -> int:
        """The latest epoch (0: never elected)."""
        with map_redis_errors():
            value = await self.redis.get(self.keys.leader_epoch)
        try:
            return int(text(value)) if value is not None else 0
        except ValueError:
            return 0

    async def history(self, count: int = HISTORY_KEPT) -> list[dict[str, Any]]:
        """The latest ``count`` elections, newest first."""
        with map_redis_errors():
            raw = texts(await self.redis.lrange(self.keys.leader_history, 0, count - 1))
        elections = []
        for item in raw:
            try:
                election = json.loads(item)
            except ValueError:  # a hand-edited entry: skipped
                continue
            if isinstance(election, dict):
                elections.append(election)
        return elections

    async def aclose(self) -> None:
        if self._owns_lease_client:
            await self.lease_redis.aclose()
