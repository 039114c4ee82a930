"""What the pool keeps in Redis so that it outlives a restart.

Key schema (``P`` is the configured prefix):
    P:static-backends       hash: name -> {"url", "tags", "weight"} (JSON; a bare URL from 0.1) of static
                            backends registered through the API
    P:pool-scale            hash: min_containers, max_containers, target set through the API (absent: config)
    P:scheduler             hash: scheduler settings changed through the API (JSON values; absent: config)
    P:client-id             string: the WebSocket client id; a restarted daemon keeps it, so the events of
                            prompts submitted before the restart still reach it
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from comfyart.config.fleet import StaticBackendConfig
from comfyart.store.redis import map_redis_errors


@dataclass(frozen=True)
class ScaleOverride:
    min_containers: int | None = None
    max_containers: int | None = None
    target: int | None = None


class PoolStore:
    def __init__(self, client: aioredis.Redis, prefix: str = "comfyart") -> None:
        self.redis = client
        self.prefix = prefix

    @property
    def _static_key(self) -> str:
        return f"{self.prefix}:static-backends"

    @property
    def _scale_key(self) -> str:
        return f"{self.prefix}:pool-scale"

    async def client_id(self) -> str:
        key = f"{self.prefix}:client-id"
        with map_redis_errors():
            await self.redis.set(key, f"comfyart-{uuid.uuid4().hex[:16]}", nx=True)
            return str(await self.redis.get(key))

    async def static_backends(self) -> dict[str, StaticBackendConfig]:
        with map_redis_errors():
            raw = await self.redis.hgetall(self._static_key)
        backends = {}
        for name, value in raw.items():
            fields = json.loads(value) if value.startswith("{") else {"url": value}
            backends[name] = StaticBackendConfig(name=name, **fields)
        return backends

    async def add_static(self, backend: StaticBackendConfig) -> None:
        value = json.dumps(backend.model_dump(exclude={"name"}))
        with map_redis_errors():
            await self.redis.hset(self._static_key, backend.name, value)

    async def remove_static(self, name: str) -> bool:
        with map_redis_errors():
            return bool(await self.redis.hdel(self._static_key, name))

    async def scale_override(self) -> ScaleOverride:
        with map_redis_errors():
            raw = await self.redis.hgetall(self._scale_key)
        return ScaleOverride(**{k: int(v) for k, v in raw.items() if k in ScaleOverride.__dataclass_fields__})

    async def set_scale_override(self, override: ScaleOverride) -> None:
        values = {k: v for k, v in vars(override).items() if v is not None}
        with map_redis_errors():
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(self._scale_key)
                if values:
                    pipe.hset(self._scale_key, mapping=values)
                await pipe.execute()

    async def scheduler_override(self) -> dict[str, Any]:
        with map_redis_errors():
            raw = await self.redis.hgetall(f"{self.prefix}:scheduler")
        return {key: json.loads(value) for key, value in raw.items()}

    async def set_scheduler_override(self, values: dict[str, Any]) -> None:
        key = f"{self.prefix}:scheduler"
        with map_redis_errors():
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(key)
                if values:
                    pipe.hset(key, mapping={k: json.dumps(v) for k, v in values.items()})
                await pipe.execute()
