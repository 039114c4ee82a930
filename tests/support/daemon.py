"""The daemon under test: settings for one, ``comfyart serve`` in the test's event loop or as a process of its own,
waiting for its tasks and pool, emulators as static backends, and a webhook receiver."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from comfyart.bus import EventHub
from comfyart.config.settings import Settings
from tests.support.paths import ROOT
from tests.support.ports import free_port


@asynccontextmanager
async def running_daemon(settings: Settings, events: EventHub | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """Run ``comfyart serve`` in this event loop; yields an HTTP client pointed at its API. ``events``: the hub it
    publishes on, for a test that watches it."""
    from comfyart import daemon

    ready, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.get_running_loop().create_task(daemon.run(settings, ready=ready, stop=stop, events=events),
                                                  name="daemon under test")
    waiter = asyncio.ensure_future(ready.wait())
    await asyncio.wait([task, waiter], timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        waiter.cancel()
        task.result()
    assert ready.is_set(), "daemon did not start within 60 s"
    base = f"http://{settings.server.host}:{settings.server.port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            yield client
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """An aiohttp ``app`` served on 127.0.0.1 (a backend that misbehaves on purpose, a webhook receiver) for the
    block; yields its base URL."""
    from aiohttp import web

    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def http_receiver(handler: Callable[..., Any], path: str = "/hook") -> AsyncIterator[str]:
    """An aiohttp server on 127.0.0.1 answering POST ``path`` with ``handler`` (a webhook receiver); yields its
    URL."""
    from aiohttp import web

    app = web.Application()
    app.router.add_post(path, handler)
    async with serving(app) as base:
        yield base + path


def make_settings(tmp_path: Path, redis_url: str, **sections: Any) -> Settings:
    document: dict[str, Any] = {"server": {"host": "127.0.0.1", "port": free_port()},
                                "redis": {"url": redis_url}, "data_dir": str(tmp_path / "data"),
                                "pool": {"min_containers": 0, "max_containers": 4, "health_interval_s": 0.5},
                                "scheduler": {"prefetch": 0}, "tracking": {"silence_s": 2.0}}
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(document.get(key), dict):
            document[key] = {**document[key], **value}
        else:
            document[key] = value
    return Settings(**document)


async def wait_for_tasks(client: httpx.AsyncClient, ids: list[str], *, timeout_s: float = 60.0,
                         final: tuple = ("completed", "failed", "canceled")) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while True:
        records = [(await client.get(f"/api/tasks/{task_id}")).json() for task_id in ids]
        if all(r["status"] in final for r in records):
            return records
        if time.monotonic() > deadline:
            stuck = [(r["id"], r["status"], r.get("error")) for r in records if r["status"] not in final]
            raise AssertionError(f"tasks not finished after {timeout_s} s: {stuck}")
        await asyncio.sleep(0.1)


async def wait_for_pool(client: httpx.AsyncClient, condition: Callable[[dict[str, Any]], bool], *,
                        timeout_s: float = 30.0) -> dict[str, Any]:
    """Poll GET /api/pool until ``condition`` holds; returns that pool description."""
    deadline = time.monotonic() + timeout_s
    while True:
        pool = (await client.get("/api/pool")).json()
        if condition(pool):
            return pool
        if time.monotonic() > deadline:
            raise AssertionError(f"pool condition not met after {timeout_s} s: {pool}")
        await asyncio.sleep(0.1)


def healthy_count(pool: dict[str, Any]) -> int:
    return sum(b["status"] == "healthy" for b in pool["backends"])


def serve_subprocess(config: dict[str, Any], path: Path) -> subprocess.Popen:
    """``comfyart serve`` as a process of its own session (so a test can SIGKILL it alone)."""
    path.write_text(yaml.safe_dump(config))
    with (path.parent / "serve.log").open("a") as log:  # kept beside the configuration for a failed test's reader
        return subprocess.Popen([sys.executable, "-m", "comfyart", "serve", "--config", str(path)], cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_for_task_sync(port: int, task_id: str, timeout_s: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        record = httpx.get(f"http://127.0.0.1:{port}/api/tasks/{task_id}").json()
        if record["status"] in ("completed", "failed", "canceled") or time.monotonic() > deadline:
            return record
        time.sleep(0.1)


def static_backends(*emulators: Any) -> list[dict[str, str]]:
    """The ``static_backends`` section for emulator processes, named emu0, emu1, ..."""
    return [{"name": f"emu{i}", "url": e.url} for i, e in enumerate(emulators)]
