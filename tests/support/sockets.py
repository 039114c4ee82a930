"""Reading a ComfyUI WebSocket in tests."""
from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp


async def frames_until_quiet(ws: aiohttp.ClientWebSocketResponse, quiet_s: float = 0.5) -> list[Any]:
    """Every frame (text as JSON, binary as bytes) until none came for ``quiet_s``."""
    frames: list[Any] = []
    while True:
        try:
            async with asyncio.timeout(quiet_s):
                message = await ws.receive()
        except TimeoutError:
            return frames
        if message.type == aiohttp.WSMsgType.BINARY:
            frames.append(message.data)
        else:
            assert message.type == aiohttp.WSMsgType.TEXT, message
            frames.append(json.loads(message.data))
