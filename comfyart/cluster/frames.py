"""Relayed ComfyUI frames and v2 previews for clients on any replica (issue 24; the wire is ``store.frames``).

``FramePlane`` is the tracker's ``frames`` sink in a replicated daemon. Every frame goes to the local relay first
(a socket on the replica whose tracker produced it costs no Redis round trip); a frame for a socket that is not
local, and every frame ComfyUI sends to no socket in particular (all the caller's sockets), is also published on
its channel. The tracker's previews (its ``previews`` hub) are published on the task's channel, for v2 event
streams on other replicas.

Publishing costs a PUBLISH only where someone may listen: a channel whose last PUBLISH reached nobody is muted for
``MUTE_S`` (so a leader whose clients are all local, or a task nobody watches, costs at most one PUBLISH a second
per channel; no PUBSUB NUMSUB round trip). Publishes leave from one sender task in pipelined batches, in order;
when Redis is slow the outbox is bounded and the oldest frames are dropped (they are progress, not ends).

The listener side (every replica): ``follow(socket_key, owner)`` while a ComfyUI socket is open here,
``watch_previews(task_id)`` while a v2 stream follows a task here; each returns its release. The listener holds one
pub/sub connection subscribed to the channels followed (reference-counted) and hands what arrives to the local
relay and the local previews hub. Messages this replica published itself are skipped (it delivered them locally).
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

import redis.asyncio as aioredis
from loguru import logger

from comfyart.bus import EventHub
from comfyart.errors import TransientError
from comfyart.models import Relay
from comfyart.store.frames import owner_channel, pack, previews_channel, socket_channel, unpack
from comfyart.store.keys import Keys
from comfyart.store.redis import map_redis_errors

MUTE_S = 1.0  # a channel whose PUBLISH reached nobody is not published on for this long
OUTBOX = 10_000  # messages waiting for the sender; past this the oldest are dropped
BATCH = 256  # messages per pipelined round trip
RETRY_S = 0.5  # after Redis failed to answer
LISTEN_S = 1.0  # one wait for a pub/sub message


class FrameSink(Protocol):
    """What the local relay (``api.comfyui.relay.FrameRelay``) does with a prompt's frames."""

    def forward(self, relay: Relay, kind: str, data: dict[str, Any]) -> None: ...

    def forward_binary(self, relay: Relay, payload: bytes) -> None: ...


class PreviewLike(Protocol):
    node: str | None
    payload: bytes


PreviewIn = Callable[[str, str | None, bytes], None]  # task id, node, payload: into the local previews hub


def relay_fields(relay: Relay) -> list[str | None]:
    return [relay.task_id, relay.comfy_prompt_id, relay.client_id, relay.owner]


class FramePlane:
    def __init__(self, redis: aioredis.Redis, keys: Keys, local: FrameSink, *, is_local: Callable[[str], bool],
                 previews: EventHub, previews_in: PreviewIn) -> None:
        self.redis = redis  # a binary client of its own (``store.frames.binary_client``), closed by ``run``
        self.keys = keys
        self.local = local
        self.is_local = is_local  # whether a socket key names a socket of this replica
        self.previews = previews  # the tracker's: the previews this replica's tracker produces
        self.previews_in = previews_in
        self.origin = uuid.uuid4().hex[:12]  # this replica's messages, which its listener skips
        self._outbox: collections.deque[tuple[str, bytes]] = collections.deque(maxlen=OUTBOX)
        self._queued = asyncio.Event()
        self._muted: dict[str, float] = {}
        self._wanted: collections.Counter[str] = collections.Counter()
        self._changed = asyncio.Event()
        self.published = 0  # messages sent (``published`` / ``delivered`` / ``dropped``: what the plane costs)
        self.received = 0
        self.dropped = 0

    # ------------------------------------------------------------------ the tracker's sink
    def forward(self, relay: Relay, kind: str, data: dict[str, Any]) -> None:
        self.local.forward(relay, kind, data)
        channel = self._channel(relay)
        if channel is not None:
            self._publish(channel, {"k": "f", "r": relay_fields(relay), "t": kind, "d": data})

    def forward_binary(self, relay: Relay, payload: bytes) -> None:
        self.local.forward_binary(relay, payload)
        channel = self._channel(relay)
        if channel is not None:
            self._publish(channel, {"k": "b", "r": relay_fields(relay)}, payload)

    def _channel(self, relay: Relay) -> str | None:
        """Where a frame goes on the wire: the owner's channel for a prompt without a client id, else its
        socket's channel unless that socket is here (None: local only)."""
        if relay.client_id is None:
            return owner_channel(self.keys, relay.owner)
        socket = relay.socket or ""
        return None if self.is_local(socket) else socket_channel(self.keys, socket)

    def _publish(self, channel: str, header: dict[str, Any], payload: bytes = b"") -> None:
        if self._muted.get(channel, 0.0) > time.monotonic():
            return
        header["o"] = self.origin
        if len(self._outbox) == self._outbox.maxlen:
            self.dropped += 1
        self._outbox.append((channel, pack(header, payload)))
        self._queued.set()

    # ------------------------------------------------------------------ the listener's registry
    def follow(self, socket_key: str, owner: str | None) -> Callable[[], None]:
        """Hear the frames of a ComfyUI socket open here; call the result when it closes."""
        return self._want(socket_channel(self.keys, socket_key), owner_channel(self.keys, owner))

    def watch_previews(self, task_id: str) -> Callable[[], None]:
        """Hear a task's previews (a v2 stream here follows it); call the result when it ends."""
        return self._want(previews_channel(self.keys, task_id))

    def _want(self, *channels: str) -> Callable[[], None]:
        self._wanted.update(channels)
        self._changed.set()
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._wanted.subtract(channels)
                self._changed.set()
        return release

    # ------------------------------------------------------------------ the loops
    async def run(self) -> None:
        pubsub: Any = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._send(), name="frames sender")
                group.create_task(self._subscribe(pubsub), name="frames subscriptions")
                group.create_task(self._listen(pubsub), name="frames listener")
                group.create_task(self._tracker_previews(), name="frames previews")
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
            await self.redis.aclose()

    async def _send(self) -> None:
        while True:
            await self._queued.wait()
            self._queued.clear()
            while self._outbox:
                batch = [self._outbox.popleft() for _ in range(min(BATCH, len(self._outbox)))]
                try:
                    with map_redis_errors():
                        async with self.redis.pipeline(transaction=False) as pipe:
                            for channel, message in batch:
                                pipe.publish(channel, message)
                            receivers = await pipe.execute()
                except TransientError:
                    self.dropped += len(batch)
                    await asyncio.sleep(RETRY_S)
                    continue
                self.published += len(batch)
                now = time.monotonic()
                for (channel, _), count in zip(batch, receivers, strict=True):
                    if not count:
                        self._muted[channel] = now + MUTE_S
                if len(self._muted) > OUTBOX:
                    self._muted = {c: t for c, t in self._muted.items() if t > now}

    async def _subscribe(self, pubsub: Any) -> None:
        """Keeps the pub/sub connection subscribed to the channels wanted (its own channel always: a pub/sub
        connection with nothing subscribed cannot wait for messages)."""
        subscribed: set[str] = set()
        self._changed.set()
        while True:
            await self._changed.wait()
            self._changed.clear()
            wanted = {channel for channel, count in self._wanted.items() if count > 0}
            wanted.add(f"{self.keys.frames_prefix}replica:{self.origin}")
            self._wanted = collections.Counter({c: n for c, n in self._wanted.items() if n > 0})
            try:
                with map_redis_errors():
                    if wanted - subscribed:
                        await pubsub.subscribe(*(wanted - subscribed))
                    if subscribed - wanted:
                        await pubsub.unsubscribe(*(subscribed - wanted))
            except TransientError as exc:
                logger.warning("frames: cannot subscribe, retrying: {}", exc)
                await asyncio.sleep(RETRY_S)
                self._changed.set()
                continue
            subscribed = wanted

    async def _listen(self, pubsub: Any) -> None:
        while not pubsub.subscribed:
            await asyncio.sleep(0.05)  # until the first subscribe (its own channel) went through
        while True:
            try:
                with map_redis_errors():
                    message = await pubsub.get_message(timeout=LISTEN_S)
            except TransientError:
                await asyncio.sleep(RETRY_S)  # redis-py subscribes again as it reconnects
                continue
            if message is not None and message.get("type") == "message":
                self._deliver(message["data"])

    def _deliver(self, message: bytes) -> None:
        try:
            header, payload = unpack(message)
        except ValueError:
            return
        if header.get("o") == self.origin:
            return
        self.received += 1
        kind = header.get("k")
        if kind == "f":
            self.local.forward(Relay(*header["r"]), header["t"], header["d"])
        elif kind == "b":
            self.local.forward_binary(Relay(*header["r"]), payload)
        elif kind == "p":
            self.previews_in(header["id"], header.get("n"), payload)

    async def _tracker_previews(self) -> None:
        """The previews this replica's tracker produces, onto their tasks' channels."""
        def ours(event: dict[str, Any]) -> bool:
            return event.get("type") == "preview" and not event.get("relayed")

        while True:  # a lagged subscription ends: subscribe again
            with self.previews.subscribe(ours) as previews:
                async for event in previews:
                    if event.get("type") != "preview":
                        continue
                    preview: PreviewLike = event["preview"]
                    self._publish(previews_channel(self.keys, event["id"]),
                                  {"k": "p", "id": event["id"], "n": preview.node}, preview.payload)
