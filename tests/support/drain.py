"""A daemon over two emulators, emu0 slow, with a long prompt running on it: what the drain tests (``comfyart drain``,
``POST /api/pool/drain``) drain."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.daemon import healthy_count, make_settings, static_backends, wait_for_pool
from tests.support.graphs import basic_graph

SLOW = "2.0"  # seconds a node on emu0: three nodes, 6 s a prompt
POOL = {"health_interval_s": 0.5, "health_timeout_s": 1.0, "static_lost_after_s": 2.0}
TRACKING = {"silence_s": 1.0, "submit_timeout_s": 2.0, "task_timeout_s": 600.0, "max_retries": 2}
DRAINED = "static:emu0"


def settings_over(tmp_path: Path, redis_url: str, *emulators: Any) -> Any:
    return make_settings(tmp_path, redis_url, static_backends=static_backends(*emulators), pool=POOL, tracking=TRACKING)


async def submit(api: httpx.AsyncClient, colors: range) -> list[str]:
    return [(await api.post("/api/tasks", json={"prompt": basic_graph(color=c)})).json()["id"] for c in colors]


async def long_prompt_on_emu0(api: httpx.AsyncClient) -> str:
    """A task running on emu0 (emu1 disabled until it runs, then enabled again); its id."""
    await wait_for_pool(api, lambda pool: healthy_count(pool) == 2)
    assert (await api.post("/api/pool/backends/static:emu1/disable")).status_code == 200
    [task_id] = await submit(api, range(1))
    deadline = time.monotonic() + 20
    while (record := (await api.get(f"/api/tasks/{task_id}")).json())["status"] != "running":
        assert time.monotonic() < deadline, record
        await asyncio.sleep(0.05)
    assert record["backend"] == DRAINED
    assert (await api.post("/api/pool/backends/static:emu1/enable")).status_code == 200
    return task_id
