"""The real redis-server the tests start (the ``redis_server`` fixture, and tests that stop one on purpose), and
clients that see it stop answering."""
from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess

import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.retry import Retry

from comfyart.store.queue import TaskQueue
from tests.support.ports import wait_for_port


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


class RestartableRedis:
    """A redis-server of a test's own that can be stopped and started again on the same port, with its data
    (append-only file, fsync'd at every write) or without (``restart(keep_data=False)``)."""

    def __init__(self, port: int, directory: str) -> None:
        self.port = port
        self.directory = directory
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", self.directory],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def restart(self, *, keep_data: bool = True) -> None:
        self.stop()
        if not keep_data:
            shutil.rmtree(os.path.join(self.directory, "appendonlydir"), ignore_errors=True)  # Redis 7
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(self.directory, "appendonly.aof"))  # Redis 6
        self.start()
