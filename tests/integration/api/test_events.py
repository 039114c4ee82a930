"""comfyart's own live events (api.events) against a real redis-server and an emulator: a task's Server-Sent Events
and the cluster's WebSocket."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.daemon import make_settings, running_daemon, static_backends
from tests.support.graphs import basic_graph, text_to_image_graph


async def test_task_events_stream_and_cluster_websocket(tmp_path: Path, redis_url, emulator):
    emu = emulator()
    settings = make_settings(tmp_path, redis_url, static_backends=static_backends(emu))
    async with running_daemon(settings) as api, aiohttp.ClientSession() as session:
        base = str(api.base_url)
        async with session.ws_connect(f"{base.replace('http', 'ws')}/api/events") as everything:
            graph = text_to_image_graph(seed=3, steps=10)
            task_id = (await api.post("/api/tasks", json={"prompt": graph})).json()["id"]
            events: list[dict[str, Any]] = []
            async with api.stream("GET", f"/api/tasks/{task_id}/events") as stream:
                assert stream.headers["content-type"].startswith("text/event-stream")
                name = None
                async for line in stream.aiter_lines():
                    if line.startswith("event: "):
                        name = line[7:]
                    elif line.startswith("data: "):
                        events.append({"event": name, **json.loads(line[6:])})
            assert events[0]["event"] == "task" and events[0]["id"] == task_id and events[0]["snapshot"]
            statuses = [e["status"] for e in events if e["event"] == "task"]
            assert statuses[-1] == "completed" and "running" in statuses
            assert statuses.index("running") < statuses.index("completed")
            completed = events[-1]
            assert completed["outputs"] and completed["outputs"][0]["content_type"] == "image/png"
            cluster: list[dict[str, Any]] = []
            async with asyncio.timeout(10):
                while not any(e["type"] == "task" and e["status"] == "completed" for e in cluster) \
                        or not any(e["type"] == "queue" for e in cluster):
                    cluster.append(json.loads((await everything.receive()).data))
            assert any(e["type"] == "pool" and e["backend"] == "static:emu0" for e in cluster)
        finished = (await api.get(f"/api/tasks/{task_id}/events")).text
        assert finished.count("event: task") == 1 and '"completed"' in finished  # a final task: its record, then end
        assert (await api.get("/api/tasks/nope/events")).status_code == 404
        async with session.ws_connect(f"{base.replace('http', 'ws')}/api/events?tasks={task_id}") as one:
            first = json.loads((await one.receive()).data)
            assert first["id"] == task_id and first["status"] == "completed"
            other = (await api.post("/api/tasks", json={"prompt": basic_graph()})).json()["id"]
            await one.send_json({"tasks": [other]})
            seen = []
            async with asyncio.timeout(10):
                while not seen or seen[-1].get("status") != "completed":
                    seen.append(json.loads((await one.receive()).data))
            assert {e["id"] for e in seen} == {other}
