"""Clients on one replica follow what another replica's loops do (issue 24): task events over SSE and the events
WebSocket, a ComfyUI client's frames and previews, a v2 stream's previews. Two daemons in this process on one
Redis: A has the backend (its loops run every prompt), B has none (it never dispatches) and serves the clients."""
from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from tests.integration.api.v2.test_events import SAMPLER, read_stream
from tests.support.daemon import healthy_count, make_settings, running_daemon, static_backends, wait_for_pool
from tests.support.graphs import text_to_image_graph
from tests.support.sockets import frames_until_end


@asynccontextmanager
async def two_replicas(tmp_path: Path, redis_url: str, emulator: Any) -> AsyncIterator[tuple[httpx.AsyncClient,
                                                                                            httpx.AsyncClient]]:
    leader = make_settings(tmp_path / "a", redis_url, static_backends=static_backends(emulator(*SAMPLER)))
    follower = make_settings(tmp_path / "b", redis_url)
    async with running_daemon(leader) as a:
        await wait_for_pool(a, lambda pool: healthy_count(pool) == 1)
        async with running_daemon(follower) as b:
            yield a, b


async def sse_events(client: httpx.AsyncClient, task_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    async with asyncio.timeout(60), client.stream("GET", f"/api/tasks/{task_id}/events") as stream:
        name = None
        async for line in stream.aiter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append({"event": name, **json.loads(line[6:])})
    return events


async def test_a_task_run_by_one_replica_is_followed_to_its_end_on_another(tmp_path: Path, redis_url, emulator):
    async with two_replicas(tmp_path, redis_url, emulator) as (a, b), aiohttp.ClientSession() as session:
        ws_b = str(b.base_url).replace("http", "ws")
        async with session.ws_connect(f"{ws_b}/api/events") as everything:
            task_id = (await a.post("/api/tasks", json={"prompt": text_to_image_graph(steps=6)})).json()["id"]
            events = await sse_events(b, task_id)
            statuses = [e["status"] for e in events if e["event"] == "task"]
            assert "running" in statuses and statuses[-1] == "completed", statuses
            assert events[-1]["outputs"], events[-1]
            heard: list[dict[str, Any]] = []
            async with asyncio.timeout(10):
                while not any(e.get("id") == task_id and e.get("status") == "completed" for e in heard):
                    heard.append(json.loads((await everything.receive()).data))
        task_events = [e for e in heard if e.get("id") == task_id and e["type"] == "task"]
        assert [e["status"] for e in task_events][-1] == "completed"
        assert len(task_events) == len({(e["status"], e["previous"], e.get("prompt_id")) for e in task_events}), \
            "an event heard twice"


async def test_a_comfyui_client_on_another_replica_hears_progress_previews_and_the_end(tmp_path: Path, redis_url,
                                                                                       emulator):
    async with two_replicas(tmp_path, redis_url, emulator) as (a, b), aiohttp.ClientSession() as session:
        ws_b = str(b.base_url).replace("http", "ws")
        async with session.ws_connect(f"{ws_b}/ws?clientId=far-away") as ws:
            assert json.loads((await ws.receive()).data)["type"] == "status"
            # queued on A: B has no pool to check a prompt against until it mirrors the leader's (issue 24, WP-D)
            answer = await a.post("/prompt", json={"prompt": text_to_image_graph(steps=6), "client_id": "far-away"})
            assert answer.status_code == 200, answer.text
            prompt_id = answer.json()["prompt_id"]
            frames = await frames_until_end(ws, prompt_id, timeout_s=60)
    text = [f for f in frames if isinstance(f, dict)]
    kinds = [f["type"] for f in text]
    assert "progress" in kinds and "executing" in kinds and "execution_success" in kinds, kinds
    assert all(f["data"].get("prompt_id") in (prompt_id, None) for f in text if f["type"] != "status")
    previews = [f for f in frames if isinstance(f, bytes)]
    assert previews and struct.unpack(">I", previews[0][:4])[0] == 1  # a preview image, as ComfyUI sends it
    assert kinds.index("execution_success") > max(i for i, k in enumerate(kinds) if k == "progress")


async def test_a_v2_stream_on_another_replica_gets_the_previews(tmp_path: Path, redis_url, emulator):
    async with two_replicas(tmp_path, redis_url, emulator) as (_, b):
        job = (await b.post("/api/v2/jobs", json={"workflow": text_to_image_graph(steps=12)})).json()
        answer, frames = await read_stream(b, job["urls"]["events"])
    names = [name for _, name, _ in frames]
    assert answer.status_code == 200 and frames[-1][2] == {"status": "succeeded"}, names
    previews = [data for _, name, data in frames if name == "preview"]
    assert previews and previews[-1]["node_id"] == "3" and previews[-1]["content_type"] == "image/jpeg", names
