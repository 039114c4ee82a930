"""API keys made at run time, in Redis: records holding only each key's SHA-256, so a dump of Redis gives no key
away, and the secret output URLs are signed with. The keys are in ``store.keys``."""
from __future__ import annotations

import secrets
import time

import redis.asyncio as aioredis

from comfyart.auth import KeyRecord, Role, hash_key, new_key
from comfyart.errors import NotFound
from comfyart.store.keys import Keys
from comfyart.store.redis import map_redis_errors, text, text_map


class KeyStore:
    """API keys made at run time, in Redis."""

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.redis = client
        self.key = keys.api_keys
        self.secret_key = keys.url_secret

    async def create(self, name: str, role: Role, *, max_queued: int | None = None,
                     submissions_per_minute: float | None = None) -> tuple[KeyRecord, str]:
        """A new key: its record, and the key itself, which is shown this once and stored nowhere."""
        while True:
            key_id, key = new_key()
            record = KeyRecord(id=key_id, name=name, role=role, sha256=hash_key(key),
                               created_ms=int(time.time() * 1000), max_queued=max_queued,
                               submissions_per_minute=submissions_per_minute)
            with map_redis_errors():
                if await self.redis.hsetnx(self.key, key_id, record.encode()):
                    return record, key

    async def get(self, key_id: str) -> KeyRecord | None:
        with map_redis_errors():
            raw = await self.redis.hget(self.key, key_id)
        return KeyRecord.decode(key_id, text(raw)) if raw else None

    async def records(self) -> list[KeyRecord]:
        with map_redis_errors():
            raw = text_map(await self.redis.hgetall(self.key))
        return sorted((KeyRecord.decode(k, v) for k, v in raw.items()), key=lambda r: r.created_ms)

    async def revoke(self, key_id: str) -> KeyRecord:
        """Mark a key revoked (kept, so the owner of its tasks still has a name); revoking twice is harmless."""
        record = await self.get(key_id)
        if record is None:
            raise NotFound(f"no key {key_id}")
        if record.revoked_ms is None:
            record = KeyRecord(**{**record.__dict__, "revoked_ms": int(time.time() * 1000)})
            with map_redis_errors():
                await self.redis.hset(self.key, key_id, record.encode())
        return record

    async def url_secret(self) -> bytes:
        """The secret output URLs are signed with: made once and kept, so links survive restarts."""
        with map_redis_errors():
            await self.redis.set(self.secret_key, secrets.token_hex(32), nx=True)
            return bytes.fromhex(text(await self.redis.get(self.secret_key)))
