"""The real redis-server the tests start (the ``redis_server`` fixture, and tests that stop one on purpose), and
clients that see it stop answering."""
from __future__ import annotations

import asyncio
import os
import shutil

import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.retry import Retry

from comfyart.store.queue import TaskQueue


def redis_server_binary() -> str:
    for candidate in ("/usr/bin/redis-server", shutil.which("redis-server")):
        if candidate and os.path.exists(candidate):
            return candidate
    raise RuntimeError("redis-server is not installed (apt-get install redis-server)")


def impatient_client(url: str) -> aioredis.Redis:
    """A client that fails a command Redis has not answered within 0.3 s, without retrying: what a Redis that
    stops answering looks like to comfyart, sooner."""
    return aioredis.from_url(url, decode_responses=True, socket_timeout=0.3, retry=Retry(NoBackoff(), 0))


async def stop_writes_once_queued(queue: TaskQueue, admin: aioredis.Redis) -> asyncio.Task[None]:
    """A task that pauses every client's writes (``CLIENT PAUSE ... WRITE``, for 10 s or until ``CLIENT
    UNPAUSE``) as soon as ``queue`` puts a task back in the queue: the writes after that one hang, reads go on."""
    await admin.ping()  # connected beforehand: the pause must come at once
    queued = asyncio.Event()
    queue.wakeups.append(queued)

    async def stop_writes() -> None:
        await queued.wait()
        await admin.execute_command("CLIENT", "PAUSE", "10000", "WRITE")

    return asyncio.create_task(stop_writes(), name="stop redis writes")
