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


async def frames_until_end(ws: aiohttp.ClientWebSocketResponse, prompt_ids: str | set[str],
                           timeout_s: float = 30) -> list[Any]:
    """Every frame (text as JSON, binary as bytes) until each of ``prompt_ids`` (one, or a set) sent its end marker
    (``executing`` with no node)."""
    waiting = {prompt_ids} if isinstance(prompt_ids, str) else set(prompt_ids)
    frames: list[Any] = []
    async with asyncio.timeout(timeout_s):
        while waiting:
            message = await ws.receive()
            if message.type == aiohttp.WSMsgType.BINARY:
                frames.append(message.data)
                continue
            assert message.type == aiohttp.WSMsgType.TEXT, message
            frame = json.loads(message.data)
            frames.append(frame)
            if frame["type"] == "executing" and frame["data"].get("node") is None:
                waiting.discard(frame["data"].get("prompt_id"))
    return frames
