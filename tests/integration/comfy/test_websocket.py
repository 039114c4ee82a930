"""The backend WebSocket (``comfy.websocket``) against a real aiohttp server: what counts as hearing from it."""
from __future__ import annotations

import asyncio
import time

import aiohttp
from aiohttp import web

from comfyart.comfy.websocket import BackendSocket
from tests.support.daemon import serving


async def test_only_a_frame_is_heard_not_the_socket_closing():
    """A paused backend's socket is closed by aiohttp's heartbeat, not by the backend: that close is no sign of
    life, or a static backend out of reach would look alive for another ~45 s (pool.unreachable)."""
    async def one_frame_then_close(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str('{"type": "status"}')
        await asyncio.sleep(0.5)
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/ws", one_frame_then_close)
    async with serving(app) as base, aiohttp.ClientSession() as session, session.ws_connect(base + "/ws") as ws:
        socket = BackendSocket(ws)
        frames, heard_at_frame = [], 0.0
        async for frame in socket.frames():
            frames.append(frame)
            heard_at_frame = socket.heard
        closed_at = time.monotonic()
    assert frames == ['{"type": "status"}']
    assert closed_at - heard_at_frame >= 0.4  # the close came half a second later
    assert socket.heard == heard_at_frame, "the socket's close counted as hearing from the backend"
