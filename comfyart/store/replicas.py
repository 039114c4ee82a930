"""What the replicas on one Redis know of each other (issue 24): each replica's record, kept alive by its heartbeat
(``cluster.replicas.Heartbeat``), and, read-only here, the leader's lease and the latest elections that
``store.lease`` writes. The keys are in ``store.keys``.

A record is a hash that expires three heartbeats after it was last written, so a replica that died leaves by
itself; the zset beside it lists the names, and a read prunes the names whose record has expired."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import redis.asyncio as aioredis

from comfyart.store.keys import Keys
from comfyart.store.redis import map_redis_errors

# KEYS: P:replicas   ARGV: the prefix of a record's key (P:replica:)
# every live record as a flat list of fields; the names whose record expired leave the zset, in the same step, so a
# replica that beats meanwhile cannot be pruned by mistake
_LIVE = """
local records = {}
for _, name in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local record = redis.call('HGETALL', ARGV[1] .. name)
  if #record == 0 then
    redis.call('ZREM', KEYS[1], name)
  else
    table.insert(records, record)
  end
end
return records
"""


@dataclass(frozen=True)
class ReplicaRecord:
    """One replica as it last said: ``url`` is where other replicas and operators reach it, ``role`` what it
    believes it is ("leader" or "standby"; the lease in P:leader is the truth), ``fleet`` a hash of each section of
    its configuration that defines the fleet (``cluster.replicas.fleet_fingerprint``)."""

    name: str
    url: str
    version: str
    started_ms: int
    heartbeat_ms: int
    role: str
    pid: int
    fleet: dict[str, str] = field(default_factory=dict)

    def fields(self) -> dict[str, str]:
        """The hash as stored: every value a string, ``fleet`` as JSON."""
        return {key: json.dumps(value, sort_keys=True) if key == "fleet" else str(value)
                for key, value in asdict(self).items()}

    @classmethod
    def parse(cls, fields: dict[str, str]) -> ReplicaRecord | None:
        """A stored hash back as a record; None for one this version cannot read (written by hand, or by a version
        that changed the record): shown as absent rather than failing every reader."""
        try:
            fleet = json.loads(fields.get("fleet") or "{}")
            if not isinstance(fleet, dict):
                return None
            return cls(name=fields["name"], url=fields["url"], version=fields["version"],
                       started_ms=int(fields["started_ms"]), heartbeat_ms=int(fields["heartbeat_ms"]),
                       role=fields["role"], pid=int(fields["pid"]),
                       fleet={str(k): str(v) for k, v in fleet.items()})
        except (KeyError, ValueError):
            return None

    @property
    def fingerprint(self) -> str:
        """The whole fleet configuration in one word: equal on two replicas configured alike."""
        return fleet_digest(self.fleet)

    def describe(self) -> dict[str, Any]:
        return {**asdict(self), "fingerprint": self.fingerprint}


def fleet_digest(sections: dict[str, str]) -> str:
    """One hash of the per-section hashes (sorted: the order they were listed in does not matter)."""
    text = json.dumps(sections, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class LeaderRecord:
    """Who holds the lease now: its replica's name, the fencing epoch of its term and since when it leads (ms)."""

    name: str
    epoch: int
    since_ms: int

    @classmethod
    def parse(cls, raw: str | bytes | None) -> LeaderRecord | None:
        """``P:leader`` ("{replica} {epoch} {since_ms}") as a record; None when absent or unreadable."""
        if raw is None:
            return None
        text = raw.decode() if isinstance(raw, bytes) else raw
        parts = text.split(" ")
        if len(parts) != 3 or not parts[0]:
            return None
        try:
            return cls(parts[0], int(parts[1]), int(parts[2]))
        except ValueError:
            return None


def parse_election(raw: str | bytes) -> dict[str, Any] | None:
    """One entry of ``P:leader:history``: {"epoch", "replica", "since_ms", "reason"}; None for one that is not a
    JSON object with an integer epoch (a hand-edited or foreign entry: skipped, not a 500)."""
    try:
        entry = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("epoch"), int):
        return None
    return entry


class ReplicaStore:
    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys
        self._live = client.register_script(_LIVE)

    async def beat(self, record: ReplicaRecord, ttl_ms: int) -> None:
        """Write the replica's record, expiring in ``ttl_ms`` unless written again, and list it."""
        key = self.keys.replica(record.name)
        with map_redis_errors():
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(key)  # a field a newer record no longer has must not outlive it
                pipe.hset(key, mapping=record.fields())  # type: ignore[arg-type]  # redis-py's mapping type is loose
                pipe.pexpire(key, ttl_ms)
                pipe.zadd(self.keys.replicas, {record.name: record.heartbeat_ms})
                await pipe.execute()

    async def leave(self, name: str) -> None:
        """The replica stops: its record goes at once (others need not wait for it to expire)."""
        with map_redis_errors():
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(self.keys.replica(name))
                pipe.zrem(self.keys.replicas, name)
                await pipe.execute()

    async def live(self) -> list[ReplicaRecord]:
        """Every replica whose record has not expired, by name; the names of expired ones are pruned."""
        with map_redis_errors():
            raw = await self._live(keys=[self.keys.replicas], args=[self.keys.replica("")])
        records = []
        for flat in raw:
            values = [v.decode() if isinstance(v, bytes) else str(v) for v in flat]
            record = ReplicaRecord.parse(dict(zip(values[::2], values[1::2], strict=True)))
            if record is not None:
                records.append(record)
        return sorted(records, key=lambda r: r.name)

    async def leader(self) -> LeaderRecord | None:
        """Who holds the lease now, if anyone."""
        with map_redis_errors():
            return LeaderRecord.parse(await self.redis.get(self.keys.leader))

    async def epoch(self) -> int:
        """The fencing epoch now (0 before the first election)."""
        with map_redis_errors():
            raw = await self.redis.get(self.keys.leader_epoch)
        try:
            return int(raw) if raw is not None else 0
        except ValueError:
            return 0

    async def elections(self, count: int) -> list[dict[str, Any]]:
        """The latest ``count`` elections, newest first."""
        with map_redis_errors():
            raw = await self.redis.lrange(self.keys.leader_history, 0, count - 1)
        return [entry for entry in map(parse_election, raw) if entry is not None]
