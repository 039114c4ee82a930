"""A backend's WebSocket: one connection's frames as they come, and the connections one after another, reconnected
with the shared backoff for as long as the caller keeps asking. aiohttp's errors become BackendUnavailable here."""
from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable

import aiohttp
from loguru import logger

from comfyart.errors import BackendUnavailable
from comfyart.policy.backoff import Backoff
from comfyart.redact import redact_url

BACKEND_FRAME_MAX = 64 << 20  # a larger frame from a backend ends that socket (SaveImageWebsocket sends whole PNGs)
HEARTBEAT_S = 30.0
RECONNECT = Backoff(first_s=0.2, max_s=5.0)


class BackendSocket:
    """One open connection. ``frames()`` yields its text frames (str) and binary ones (bytes, the previews) until
    it closes; ``heard`` is the monotonic time of the last frame (or of the connection)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self.heard = time.monotonic()

    async def frames(self) -> AsyncIterator[str | bytes]:
        ws = self._ws
        while True:
            try:
                message = await ws.receive()
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                raise BackendUnavailable(f"websocket: {type(exc).__name__}: {exc}") from exc
            if message.type == aiohttp.WSMsgType.TEXT or message.type == aiohttp.WSMsgType.BINARY:
                # only a frame is a sign of life: the close that aiohttp's heartbeat makes of a paused backend's
                # socket must not count as hearing from it (it held off giving that backend up by ~45 s)
                self.heard = time.monotonic()
                yield message.data
            elif message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                return

    async def close(self) -> None:
        """Ends ``frames()`` (from another task too)."""
        await self._ws.close()


async def reconnecting(session: aiohttp.ClientSession, url: str, *, backoff: Backoff = RECONNECT,
                      rand: Callable[[], float] = random.random,
                      before_connect: Callable[[], None] | None = None) -> AsyncGenerator[BackendSocket, None]:
    """Connect to ``url``, yield the connection, and once the caller is done with it (it closed, or the caller
    moved on), wait the backoff's next delay and connect again; a connection that opens starts the backoff over.
    The caller stops by breaking out of its loop. ``before_connect`` runs right before each connect; what it
    raises ends the generator (a replica no longer leading must not take the shared client id back)."""
    delays = backoff.delays(rand)
    while True:
        if before_connect is not None:
            before_connect()
        try:
            async with session.ws_connect(url, heartbeat=HEARTBEAT_S, max_msg_size=BACKEND_FRAME_MAX) as ws:
                delays = backoff.delays(rand)
                yield BackendSocket(ws)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            logger.debug("websocket down url={} error={!r}", redact_url(url), exc)
        await asyncio.sleep(next(delays))
