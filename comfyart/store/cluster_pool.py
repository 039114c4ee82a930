"""The leader's pool as standby replicas read it (issue 24, follower parity; ``cluster.mirror``).

    P:cluster:pool              hash: ``doc`` the latest snapshot (JSON, ``pool.mirrored.snapshot``), ``v`` its
                                version ("{epoch}:{n}", n counting every publication), ``epoch`` its leader's
    P:cluster:inventory:{sha}   hash: ``b`` an /object_info document (zlib), ``e`` its /embeddings answer; by the
                                inventory's digest, written once per digest and term, expiring a week after

The snapshot is written by a fenced script (``store.fence``): a leader that lost its term cannot overwrite the new
leader's pool with its own. Documents are content-addressed: whoever writes one writes the same bytes, so their
write is not fenced. A standby polls ``v`` (one short HGET) and reads ``doc`` only when it changed.
"""
from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from comfyart.store.fence import FENCED_CALL, fence_arg
from comfyart.store.keys import Keys
from comfyart.store.redis import map_redis_errors

DOCUMENT_TTL_S = 7 * 24 * 3600

# KEYS: epoch, pool; ARGV: caller's epoch, snapshot JSON. Returns the new version.
_PUBLISH_POOL = FENCED_CALL + """
local n = redis.call('HINCRBY', KEYS[2], 'n', 1)
local version = (ARGV[1] == '' and '0' or ARGV[1]) .. ':' .. n
redis.call('HSET', KEYS[2], 'doc', ARGV[2], 'v', version, 'epoch', ARGV[1])
return version
"""


@dataclass(frozen=True)
class PoolDocument:
    """A published snapshot: its version and JSON."""

    version: str
    json: bytes


def _text(raw: bytes | str | None) -> str | None:
    return raw.decode() if isinstance(raw, bytes) else raw


class ClusterPool:
    """``client`` must leave replies as bytes (``store.frames.binary_client``): documents are compressed."""

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys
        self.pool_key = f"{keys.prefix}:cluster:pool"
        self._publish = client.register_script(_PUBLISH_POOL)

    async def aclose(self) -> None:
        await self.redis.aclose()

    def inventory_key(self, digest: str) -> str:
        return f"{self.keys.prefix}:cluster:inventory:{digest}"

    async def publish(self, snapshot_json: bytes) -> str:
        """Write the snapshot under the caller's fence (``errors.Fenced``: this replica's term is over); its
        version."""
        with map_redis_errors():
            version = await self._publish(keys=[self.keys.leader_epoch, self.pool_key],
                                          args=[fence_arg(), snapshot_json])
        return _text(version) or ""

    async def put_inventory(self, digest: str, compressed: bytes, embeddings: bytes) -> None:
        """Store a document once (its bytes only when Redis lacks it); its expiry starts again either way."""
        key = self.inventory_key(digest)
        with map_redis_errors():
            if not await self.redis.exists(key):
                await self.redis.hset(key, mapping={"b": compressed, "e": embeddings})
            await self.redis.expire(key, DOCUMENT_TTL_S)

    async def version(self) -> str | None:
        """The latest snapshot's version (None: none published)."""
        with map_redis_errors():
            return _text(await self.redis.hget(self.pool_key, "v"))

    async def latest(self) -> PoolDocument | None:
        with map_redis_errors():
            version, doc = await self.redis.hmget(self.pool_key, ["v", "doc"])
        if version is None or doc is None:
            return None
        return PoolDocument(_text(version) or "", doc if isinstance(doc, bytes) else str(doc).encode())

    async def inventory(self, digest: str) -> tuple[bytes, bytes] | None:
        """A document by digest: its compressed /object_info and /embeddings answer (None: not stored)."""
        with map_redis_errors():
            body, embeddings = await self.redis.hmget(self.inventory_key(digest), ["b", "e"])
        if not isinstance(body, bytes):
            return None
        return body, embeddings if isinstance(embeddings, bytes) else b""
