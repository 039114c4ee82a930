"""``/ws``: the WebSocket a client opens with its ``clientId``; frames reach it through the emulator's outbox."""
from __future__ import annotations

import json
import uuid

from aiohttp import WSMsgType, web

from comfyart.emulator.engine import EMULATOR
from comfyart.emulator.newest import server_features

routes = web.RouteTableDef()


@routes.get("/ws")
async def websocket(request: web.Request) -> web.StreamResponse:
    emu = request.app[EMULATOR]
    ws = web.WebSocketResponse(max_msg_size=0)
    await ws.prepare(request)
    sid = request.query.get("clientId") or uuid.uuid4().hex
    emu.sockets[sid] = ws
    emu.socket_flags.pop(sid, None)
    try:
        await ws.send_str(json.dumps({"type": "status", "data": {
            "status": {"exec_info": {"queue_remaining": emu.queue_remaining()}}, "sid": sid}}))
        running = emu.running
        if running is not None and running.extra_data.get("client_id") == sid and emu.running_node:
            await ws.send_str(json.dumps({"type": "executing", "data": {"node": emu.running_node}}))
        first = True
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue
            if first:
                first = False
                try:
                    parsed = json.loads(message.data)
                except ValueError:
                    continue
                if isinstance(parsed, dict) and parsed.get("type") == "feature_flags":
                    emu.socket_flags[sid] = parsed.get("data") or {}
                    flags = server_features(emu.flavour.newest)
                    await ws.send_str(json.dumps({"type": "feature_flags", "data": flags}))
    finally:
        if emu.sockets.get(sid) is ws:
            del emu.sockets[sid]
    return ws
