"""Every store of one Redis, opened together: the daemon and the CLI hold this and never the Redis client itself."""
from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from comfyart.bus import EventHub
from comfyart.config.sections import QuotaConfig
from comfyart.config.settings import Settings
from comfyart.store.api_keys import KeyStore
from comfyart.store.assets import AssetStore
from comfyart.store.comfy_index import ComfyIndex
from comfyart.store.deliveries import Deliveries
from comfyart.store.eventlog import EVENTS_KEPT, EventLog, replicated
from comfyart.store.idempotency import IdempotencyStore
from comfyart.store.keys import Keys
from comfyart.store.lease import LeaseStore
from comfyart.store.pool import PoolStore
from comfyart.store.queue import TaskQueue
from comfyart.store.quotas import Quotas
from comfyart.store.redis import EmbeddedRedis, connect_redis
from comfyart.store.stats import StatsSamples
from comfyart.store.tasks import TaskStore
from comfyart.store.workflows import WorkflowStore


@dataclass
class Stores:
    client: aioredis.Redis
    embedded: EmbeddedRedis | None
    keys: Keys
    queue: TaskQueue
    tasks: TaskStore
    comfy: ComfyIndex
    deliveries: Deliveries
    workflows: WorkflowStore
    pool: PoolStore
    api_keys: KeyStore
    stats: StatsSamples
    idempotency: IdempotencyStore
    assets: AssetStore
    lease: LeaseStore  # the leader's lease, over a small connection pool of its own

    @property
    def replicated(self) -> bool:
        """Whether task events go through Redis (``store.eventlog``): then a bridge must publish them."""
        return bool(self.tasks.stream)

    def event_log(self) -> EventLog:
        return EventLog(self.client, self.keys)

    @classmethod
    async def open(cls, settings: Settings, events: EventHub | None = None) -> Stores:
        """Connect to the configured Redis (or start the embedded one); raises ConfigError when it does not
        answer. Task changes are published on ``events``."""
        client, embedded = await connect_redis(settings)
        return cls.on(client, settings.redis.prefix, events=events, ageing_s=settings.scheduler.priority_ageing_s,
                      embedded=embedded, replicated=replicated(settings),
                      events_kept=settings.cluster.events_kept)

    @classmethod
    def on(cls, client: aioredis.Redis, prefix: str, *, events: EventHub | None = None, ageing_s: float = 0.0,
           embedded: EmbeddedRedis | None = None, replicated: bool = False,
           events_kept: int = EVENTS_KEPT) -> Stores:
        """The stores of a client already connected, under ``prefix``. ``replicated``: task changes go through
        the stream ``P:events`` (``store.eventlog``), which every replica's bridge publishes on its hub; else the
        stores publish on ``events`` themselves."""
        keys = Keys(prefix)
        events = events or EventHub()
        stream = keys.events if replicated else ""
        queue = TaskQueue(client, keys, events=events, ageing_s=ageing_s, stream=stream, events_kept=events_kept)
        tasks = TaskStore(client, keys, queue, events=events, stream=stream, events_kept=events_kept)
        return cls(client, embedded, keys, queue, tasks, ComfyIndex(client, keys, tasks), Deliveries(client, keys),
                   WorkflowStore(client, keys), PoolStore(client, keys), KeyStore(client, keys),
                   StatsSamples(client, keys), IdempotencyStore(client, keys), AssetStore(client, keys),
                   LeaseStore(client, keys))

    def quotas(self, config: QuotaConfig) -> Quotas:
        return Quotas(self.client, self.keys, config)

    async def aclose(self) -> None:
        """Status changes already on their way reach Redis first; then the connection (and an embedded Redis)
        close."""
        try:
            await self.tasks.transitions.aclose()
        finally:
            try:
                await self.lease.aclose()
            finally:
                await self.client.aclose()
                if self.embedded is not None:
                    await self.embedded.stop()
