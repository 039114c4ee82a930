"""Fixtures: a real redis-server on a free loopback port, emulator processes, the daemon in-process, and
(in tests marked ``docker``) two real Docker engines with the emulator image."""
from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis
import yaml

from comfyart.config.settings import Settings
from tests import dockerenv

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def free_port_range(size: int) -> tuple[int, int]:
    """``size`` consecutive free ports (checked one by one; good enough on a test machine)."""
    for _ in range(200):
        start = free_port()
        if start + size > 65000:
            continue
        ports = range(start, start + size)
        if all(_port_free(p) for p in ports):
            return start, start + size - 1
    raise RuntimeError("no free port range")


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_for_port(port: int, host: str = "127.0.0.1", timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port}")


def _redis_server_binary() -> str:
    for candidate in ("/usr/bin/redis-server", shutil.which("redis-server")):
        if candidate and os.path.exists(candidate):
            return candidate
    raise RuntimeError("redis-server is not installed (apt-get install redis-server)")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen([_redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--dir", str(workdir)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port)
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(10)


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """The test Redis, emptied before each test."""
    with redis.Redis.from_url(redis_server) as client:
        client.flushall()
    return redis_server


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


class EmulatorProcess:
    def __init__(self, port: int, base_dir: Path, process: subprocess.Popen) -> None:
        self.port = port
        self.base_dir = base_dir
        self.process = process

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def control(self, **changes: Any) -> dict[str, Any]:
        response = httpx.post(self.url + "/emulator/control", json=changes, timeout=10)
        response.raise_for_status()
        return response.json()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Callable[..., EmulatorProcess]]:
    """Factory: ``emulator(*extra_args, port=None)`` starts ``python -m comfyart.emulator`` on ``port`` or a free
    one."""
    started: list[EmulatorProcess] = []

    def start(*args: str, port: int | None = None) -> EmulatorProcess:
        port = port or free_port()
        base_dir = tmp_path / f"emulator-{port}"
        process = subprocess.Popen([sys.executable, "-m", "comfyart.emulator", "--host", "127.0.0.1", "--port",
                                    str(port), "--base-dir", str(base_dir), *args], cwd=ROOT,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(port)
        started.append(EmulatorProcess(port, base_dir, process))
        return started[-1]

    yield start
    for emu in started:
        emu.stop()


@asynccontextmanager
async def running_daemon(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """Run ``comfyart serve`` in this event loop; yields an HTTP client pointed at its API."""
    from comfyart import daemon

    ready, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.get_running_loop().create_task(daemon.run(settings, ready=ready, stop=stop),
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
async def http_receiver(handler: Callable[..., Any], path: str = "/hook") -> AsyncIterator[str]:
    """An aiohttp server on 127.0.0.1 answering POST ``path`` with ``handler`` (a webhook receiver); yields its
    URL."""
    from aiohttp import web

    app = web.Application()
    app.router.add_post(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}{path}"
    finally:
        await runner.cleanup()


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
    return subprocess.Popen([sys.executable, "-m", "comfyart", "serve", "--config", str(path)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def wait_for_task_sync(port: int, task_id: str, timeout_s: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        record = httpx.get(f"http://127.0.0.1:{port}/api/tasks/{task_id}").json()
        if record["status"] in ("completed", "failed", "canceled") or time.monotonic() > deadline:
            return record
        time.sleep(0.1)


def basic_graph(color: int = 0x336699, width: int = 64, height: int = 48, prefix: str = "test/basic") -> dict[str, Any]:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": width, "height": height, "batch_size": 1,
                                                     "color": color}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }


def text_to_image_graph(seed: int = 1, steps: int = 4) -> dict[str, Any]:
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly-fp16.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "3": {"class_type": "KSampler", "inputs": {"seed": seed, "steps": steps, "cfg": 7.0, "sampler_name": "euler",
                                                   "scheduler": "normal", "denoise": 1.0, "model": ["4", 0],
                                                   "positive": ["6", 0], "negative": ["7", 0],
                                                   "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "t2i", "images": ["8", 0]}},
    }


@pytest.fixture(scope="session")
def engines() -> Iterator[dict]:
    """Two real Docker engines (two hosts), each with the emulator image; shared by every test that needs them."""
    started = {name: dockerenv.start_engine(name) for name in ("a", "b")}
    try:
        tags = {}
        for engine in started.values():
            with engine.client() as client:
                dockerenv.remove_test_containers(client)
                tags[engine.name] = dockerenv.ensure_emulator_image(client)
        assert len(set(tags.values())) == 1
        yield {"engines": started, "image": tags["a"]}
    finally:
        for engine in started.values():
            with engine.client() as client:
                dockerenv.remove_test_containers(client)
            dockerenv.stop_engine(engine)
