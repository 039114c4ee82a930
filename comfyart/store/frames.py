"""Relayed ComfyUI frames and v2 previews through Redis pub/sub, for several replicas on one Redis (issue 24).

Why pub/sub and not the event stream: frames and previews are ephemeral (a client that was away misses them, as a
ComfyUI client that reconnects does), binary and large, and only the replica holding the client's socket or stream
wants them; nothing is kept. A prompt's end never travels here: it comes from the task's final status, on the event
stream (``store.eventlog``), so it is never lost.

Channels (``store.keys``): ``P:frames:{sha1 of the socket key}`` (one ComfyUI socket: the key holds a NUL),
``P:frames:owner:{owner or -}`` (frames ComfyUI sends to no socket: every socket of that caller), ``P:previews:{task}``
(a v2 event stream's previews). A message: 4 bytes (big-endian) of header length, the JSON header, then the binary
payload if any. Messages go over a client of their own that does not decode replies (previews are bytes).
"""
from __future__ import annotations

import hashlib
import json
import struct
from typing import Any

import redis.asyncio as aioredis

from comfyart.store.keys import Keys

FRAME_CONNECTIONS = 4  # the publisher's pipeline and the listener's pub/sub connection, with room to spare


def binary_client(client: aioredis.Redis, connections: int = FRAME_CONNECTIONS) -> aioredis.Redis:
    """A client of the same Redis as ``client`` that leaves replies as bytes, over a small pool of its own."""
    shared = client.connection_pool
    kwargs = {key: value for key, value in shared.connection_kwargs.items()
              if key not in ("max_connections", "timeout", "decode_responses")}
    pool = aioredis.BlockingConnectionPool(connection_class=shared.connection_class, max_connections=connections,
                                           decode_responses=False, **kwargs)
    return aioredis.Redis.from_pool(pool)


def socket_channel(keys: Keys, socket_key: str) -> str:
    return keys.frames_prefix + hashlib.sha1(socket_key.encode()).hexdigest()


def owner_channel(keys: Keys, owner: str | None) -> str:
    return f"{keys.frames_prefix}owner:{owner or '-'}"


def previews_channel(keys: Keys, task_id: str) -> str:
    return keys.previews_prefix + task_id


def pack(header: dict[str, Any], payload: bytes = b"") -> bytes:
    encoded = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack(">I", len(encoded)) + encoded + payload


def unpack(message: bytes) -> tuple[dict[str, Any], bytes]:
    """A message's header and payload; ValueError for one that is not ours."""
    if len(message) < 4:
        raise ValueError("too short")
    length = struct.unpack(">I", message[:4])[0]
    header = json.loads(message[4:4 + length])
    if not isinstance(header, dict):
        raise ValueError("not a header")
    return header, message[4 + length:]
