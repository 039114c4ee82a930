"""What the route modules share: ComfyUI's bare 500 answer, request bodies read as JSON the way its server reads
them.
"""
from __future__ import annotations

import json
from typing import Any

from aiohttp import web

FAILURE_TEXT = "500 Internal Server Error\n\nServer got itself in trouble"


def failure() -> web.Response:
    return web.Response(status=500, text=FAILURE_TEXT)


async def json_body(request: web.Request) -> Any:
    raw = await request.read()
    return json.loads(raw) if raw else None


async def json_object(request: web.Request) -> dict[str, Any] | None:
    """The body as a JSON object, or None where ComfyUI answers 500 (not JSON, or not an object)."""
    try:
        body = await json_body(request)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None
