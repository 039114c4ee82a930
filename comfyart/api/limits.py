"""Limits on what a request may send: body size (checked before anything reads it), JSON nesting."""
from __future__ import annotations

import json
from typing import Any

from comfyart.api.v2.errors import error_body, is_v2
from comfyart.config.sections import LimitsConfig

MULTIPART_OVERHEAD = 1 << 20  # form fields and boundaries around an upload


class BodyTooLarge(Exception):
    pass


class JSONTooDeep(ValueError):
    pass


def json_depth_exceeds(value: Any, max_depth: int) -> bool:
    """Whether ``value`` nests objects and arrays more than ``max_depth`` deep (iteratively: no recursion limit
    to hit on the hostile input this guards against)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > max_depth:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def parse_json(raw: str | bytes, max_depth: int) -> Any:
    """``json.loads`` that refuses nesting past ``max_depth`` with JSONTooDeep, and anything that is not JSON with
    ValueError. (The standard parser recurses: a deep enough document would raise RecursionError instead.)"""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise JSONTooDeep(f"JSON nested more than {max_depth} levels deep") from None
    if json_depth_exceeds(value, max_depth):
        raise JSONTooDeep(f"JSON nested more than {max_depth} levels deep")
    return value


V2_UPLOAD_PATH = "/api/v2/assets"


def body_limit(limits: LimitsConfig, content_type: str, path: str = "", v2_upload_bytes: int | None = None) -> int:
    """The most bytes a request body may have: uploads (multipart) get the upload limit, v2 assets theirs."""
    if content_type.startswith("multipart/form-data") and path == V2_UPLOAD_PATH and v2_upload_bytes is not None:
        return v2_upload_bytes + MULTIPART_OVERHEAD
    if content_type.startswith("multipart/form-data"):
        return limits.max_upload_bytes + MULTIPART_OVERHEAD
    return limits.max_body_bytes


class BodyLimit:
    """Refuses a body over its limit before a route reads it: by its Content-Length at once (413), or, for a
    chunked body, as soon as the bytes read pass the limit (BodyTooLarge, answered 413)."""

    def __init__(self, app: Any, limits: LimitsConfig, v2_upload_bytes: int | None = None) -> None:
        self.app = app
        self.limits = limits
        self.v2_upload_bytes = v2_upload_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        path = scope.get("path", "")
        limit = body_limit(self.limits, headers.get("content-type", ""), path, self.v2_upload_bytes)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            message = f"body larger than {limit} bytes"
            refusal = error_body("payload_too_large", message) if is_v2(path) else {"detail": message}
            body = json.dumps(refusal).encode()
            await send({"type": "http.response.start", "status": 413,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        received = 0

        async def counted() -> dict[str, Any]:
            nonlocal received
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(f"body larger than {limit} bytes")
            return message

        await self.app(scope, counted, send)
