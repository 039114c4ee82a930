"""What the pool and the scheduler keep in Redis so that it outlives a restart: static backends registered
through the API, scale and scheduler settings changed at run time, the backends' WebSocket client id. The keys are
in ``store.keys``."""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from comfyart.config.fleet import StaticBackendConfig
from comfyart.store.keys import Keys
from comfyart.store.redis import fields, map_redis_errors, text_map


@dataclass(frozen=True)
class ScaleOverride:
    min_containers: int | None = None
    max_containers: int | None = None
    target: int | None = None


class PoolStore:
    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys

    async def client_id(self) -> str:
        key = self.keys.client_id
        with map_redis_errors():
            await self.redis.set(key, f"comfyart-{uuid.uuid4().hex[:16]}", nx=True)
            return str(await self.redis.get(key))

    async def static_backends(self) -> dict[str, StaticBackendConfig]:
        with map_redis_errors():
            raw = text_map(await self.redis.hgetall(self.keys.static_backends))
        backends = {}
        for name, value in raw.items():
            record = json.loads(value) if value.startswith("{") else {"url": value}
            backends[name] = StaticBackendConfig(name=name, **record)
        return backends

    async def add_static(self, backend: StaticBackendConfig) -> None:
        value = json.dumps(backend.model_dump(exclude={"name"}))
        with map_redis_errors():
            await self.redis.hset(self.keys.static_backends, backend.name, value)

    async def remove_static(self, name: str) -> bool:
        with map_redis_errors():
            return bool(await self.redis.hdel(self.keys.static_backends, name))

    async def scale_override(self) -> ScaleOverride:
        with map_redis_errors():
            raw = text_map(await self.redis.hgetall(self.keys.pool_scale))
        return ScaleOverride(**{k: int(v) for k, v in raw.items() if k in ScaleOverride.__dataclass_fields__})

    async def set_scale_override(self, override: ScaleOverride) -> None:
        values = {k: v for k, v in vars(override).items() if v is not None}
        with map_redis_errors():
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(self.keys.pool_scale)
                if values:
                    pipe.hset(self.keys.pool_scale, mapping=fields(values))
                await pipe.execute()

    async def scheduler_override(self) -> dict[str, Any]:
        with map_redis_errors():
            raw = text_map(await self.redis.hgetall(self.keys.scheduler))
        return {key: json.loads(value) for key, value in raw.items()}

    async def set_scheduler_override(self, values: dict[str, Any]) -> None:
        key = self.keys.scheduler
        with map_redis_errors():
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(key)
                if values:
                    pipe.hset(key, mapping={k: json.dumps(v) for k, v in values.items()})
                await pipe.execute()
