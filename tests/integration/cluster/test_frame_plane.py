"""The frame plane (``cluster.frames``) between two replicas' relays: a frame for a socket held by the other
replica reaches it, one for a local socket costs no PUBLISH, nothing comes back to its publisher, and after Redis
restarts the listener hears again (redis-py subscribes anew as it reconnects)."""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis

from comfyart.bus import EventHub
from comfyart.cluster.frames import FramePlane
from comfyart.models import Relay
from comfyart.store.frames import binary_client
from comfyart.store.keys import Keys
from tests.support.ports import free_port
from tests.support.redis import RestartableRedis


class Recorder:
    def __init__(self) -> None:
        self.frames: list[tuple[str, Any]] = []
        self.arrived = asyncio.Event()

    def forward(self, relay: Relay, kind: str, data: dict[str, Any]) -> None:
        self.frames.append((kind, data))
        self.arrived.set()

    def forward_binary(self, relay: Relay, payload: bytes) -> None:
        self.frames.append(("binary", payload))
        self.arrived.set()


@contextlib.asynccontextmanager
async def plane(url: str, local_sockets: set[str]) -> AsyncIterator[tuple[FramePlane, Recorder]]:
    client = aioredis.from_url(url, decode_responses=True)
    recorder = Recorder()
    frames = FramePlane(binary_client(client), Keys("test"), recorder, is_local=local_sockets.__contains__,
                        previews=EventHub(), previews_in=lambda task, node, payload: None)
    task = asyncio.create_task(frames.run())
    try:
        yield frames, recorder
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.aclose()


async def heard(recorder: Recorder, count: int, timeout_s: float = 5) -> list[tuple[str, Any]]:
    async with asyncio.timeout(timeout_s):
        while len(recorder.frames) < count:
            recorder.arrived.clear()
            await recorder.arrived.wait()
    return recorder.frames


async def test_frames_reach_the_replica_holding_the_socket_across_a_redis_restart(tmp_path):
    server = RestartableRedis(free_port(), str(tmp_path))
    await asyncio.to_thread(server.start)
    relay = Relay("T1", "cp1", "far", None)
    try:
        async with plane(server.url, set()) as (leader, on_leader), \
                plane(server.url, {"far"}) as (follower, on_follower):
            await on_follower_following(follower, "far")
            leader.forward(relay, "progress", {"value": 1})
            leader.forward_binary(relay, b"\x00\x00\x00\x01jpeg")
            assert await heard(on_follower, 2) == [("progress", {"value": 1}), ("binary", b"\x00\x00\x00\x01jpeg")]
            assert len(on_leader.frames) == 2  # its own relay had them first (and found no socket)
            await asyncio.to_thread(server.restart)
            for attempt in range(50):  # until the listener is back: frames sent meanwhile are lost, as designed
                leader.forward(relay, "progress", {"value": 100 + attempt})
                await asyncio.sleep(0.1)
                if len(on_follower.frames) > 2:
                    break
            assert on_follower.frames[-1][0] == "progress" and on_follower.frames[-1][1]["value"] >= 100
            await asyncio.sleep(0.3)
            assert len(on_leader.frames) == len({str(f) for f in on_leader.frames}), "a frame came back to its sender"
            assert leader.received == 0
    finally:
        await asyncio.to_thread(server.stop)


async def test_a_frame_for_a_local_socket_costs_no_publish(redis_url):
    async with plane(redis_url, {"here"}) as (frames, recorder):
        frames.forward(Relay("T1", "cp1", "here", None), "progress", {"value": 1})
        await asyncio.sleep(0.2)
        assert frames.published == 0 and recorder.frames == [("progress", {"value": 1})]


async def on_follower_following(frames: FramePlane, socket_key: str) -> None:
    frames.follow(socket_key, None)
    await asyncio.sleep(0.3)  # the subscription is made by the plane's own task
