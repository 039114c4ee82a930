"""No frame of a prompt without a client id reaches its caller's sockets after its end (api.comfyui.sockets and
relay): the sockets' loop on a real redis-server, fed the store's own events, and the relay the tracker calls. A
late frame comes when the tracker relays one before it hears of a cancel, a race too narrow to hit on purpose
through a daemon, so the test relays it itself once the end is out."""
from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from comfyart.api.comfyui.relay import FrameRelay
from comfyart.api.comfyui.sockets import Connection, Sockets
from comfyart.bus import EventHub
from comfyart.config.sections import LimitsConfig
from comfyart.models import ComfyPrompt, NewTask, Relay, TaskStatus, socket_key
from comfyart.store.stores import Stores
from tests.support.graphs import basic_graph

PREVIEW = struct.pack(">II", 1, 2) + b"\x89PNG"


@contextlib.asynccontextmanager
async def sockets_loop(redis_client: Any) -> AsyncIterator[tuple[Stores, Sockets]]:
    stores = Stores.on(redis_client, "ends", events=EventHub())
    sockets = Sockets(store=stores.tasks, queue=stores.queue, events=stores.tasks.events, limits=LimitsConfig())
    loop = asyncio.get_running_loop().create_task(sockets.run(), name="sockets under test")
    await asyncio.sleep(0)  # subscribed before the first change
    try:
        yield stores, sockets
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop


def kinds(connection: Connection, prompt_id: str) -> list[Any]:
    """Its frames about ``prompt_id``, and the binary ones as they are (they name no prompt)."""
    return [f if isinstance(f, bytes) else f["type"] for f in connection.frames
            if isinstance(f, bytes) or f["data"].get("prompt_id") == prompt_id]


def texts(connection: Connection) -> list[dict[str, Any]]:
    """Its text frames, each as its type and prompt id."""
    return [{"type": f["type"], "prompt_id": f["data"].get("prompt_id")} for f in connection.frames
            if isinstance(f, dict)]


async def until(condition: Callable[[], bool], timeout_s: float = 10) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


async def running_prompt(stores: Stores, comfy_prompt_id: str) -> str:
    task = await stores.tasks.create(NewTask(prompt=basic_graph(), owner="alice",
                                             comfy=ComfyPrompt(comfy_prompt_id=comfy_prompt_id, number=1.0)))
    await stores.tasks.update(task.id, to=TaskStatus.RUNNING, allowed_from=[TaskStatus.PENDING])
    return task.id


@pytest.mark.parametrize("end", [TaskStatus.CANCELED, TaskStatus.COMPLETED, TaskStatus.FAILED])
async def test_no_frame_of_a_prompt_without_a_client_id_follows_its_end(redis_client, end: TaskStatus):
    async with sockets_loop(redis_client) as (stores, sockets):
        mine, yours = Connection("one", "alice"), Connection("two", "alice")
        sockets.connections.update({socket_key("alice", "one"): mine, socket_key("alice", "two"): yours})
        relay = FrameRelay(sockets.connections)
        task_id, later_id = await running_prompt(stores, "p-1"), await running_prompt(stores, "p-2")
        to_client = Relay(task_id, "p-1", None, "alice")
        relay.forward(to_client, "progress", {"prompt_id": "backend's", "node": "3", "value": 0, "max": 2})
        relay.forward_binary(to_client, PREVIEW)
        await stores.tasks.update(task_id, to=end, allowed_from=[TaskStatus.RUNNING])
        # the loop handles events in order: once it told of a later prompt's interruption, it handled this end
        await stores.tasks.cancel(later_id)
        interrupted = {"type": "execution_interrupted", "prompt_id": "p-2"}
        await until(lambda: interrupted in texts(mine) and interrupted in texts(yours))
        told = ["execution_interrupted"] if end is TaskStatus.CANCELED else []
        assert kinds(mine, "p-1") == kinds(yours, "p-1") == ["progress", PREVIEW, *told]

        # late frames, as the tracker may relay them before it hears of the end
        relay.forward(to_client, "progress", {"prompt_id": "backend's", "node": "3", "value": 1, "max": 2})
        relay.forward(to_client, "progress_state", {"prompt_id": "backend's", "nodes": {}})
        relay.forward_binary(to_client, PREVIEW)
        assert kinds(mine, "p-1") == kinds(yours, "p-1") == ["progress", PREVIEW, *told]
