"""Which replica holds which uploaded file (issue 24, "files from any replica"), and the secret replicas show each
other on the peer file route. Only replicated daemons write these keys; one process never does.

    P:files:inputs      hash: input id (sha256 + extension) -> the name of the replica that took its upload
    P:files:blobs       hash: blob hex digest (blake3) -> the name of the replica that took its upload
    P:cluster:secret    string: shown by one replica to another on /api/cluster/peer/files/… (X-Comfyart-Peer);
                        made once (SET NX) by the first replica to start, never in a URL

Outputs need no index: each output record names its holder (``OutputFile.replica``). The hashes are not pruned:
an entry outlives its file by the size of a name (an input id is ~70 bytes), and a stale one costs a failed fetch.
"""
from __future__ import annotations

import secrets
from collections.abc import Collection

import redis.asyncio as aioredis

from comfyart.store.keys import Keys
from comfyart.store.redis import map_redis_errors

SECRET_BYTES = 32


class FileIndex:
    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.redis = client
        self.index = {"inputs": f"{keys.prefix}:files:inputs", "blobs": f"{keys.prefix}:files:blobs"}
        self.secret_key = f"{keys.prefix}:cluster:secret"

    async def hold(self, kind: str, name: str, replica: str) -> None:
        """Note that ``replica`` holds the file ``name`` of ``kind`` (inputs or blobs); the latest upload wins
        (same bytes: any holder is as good)."""
        with map_redis_errors():
            await self.redis.hset(self.index[kind], name, replica)

    async def holders(self, kind: str, names: Collection[str]) -> dict[str, str]:
        """The replica that holds each of ``names`` the index knows."""
        if not names:
            return {}
        ordered = list(names)
        with map_redis_errors():
            found = await self.redis.hmget(self.index[kind], ordered)
        return {name: _text(holder) for name, holder in zip(ordered, found, strict=True) if holder is not None}

    async def secret(self) -> str:
        """The cluster's peer secret: made here if no replica made it yet."""
        with map_redis_errors():
            await self.redis.set(self.secret_key, secrets.token_urlsafe(SECRET_BYTES), nx=True)
            value = await self.redis.get(self.secret_key)
        return _text(value) if value is not None else ""  # deleted between the two calls: no peer gets in


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
