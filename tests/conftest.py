"""Fixtures: a real redis-server on a free loopback port, emulator processes, an HTTP session, the workflow store,
and (in tests marked ``docker``) two real Docker engines with the emulator image. Helpers live in ``tests/support``."""
from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
import redis
import redis.asyncio as aioredis

from comfyart.store.keys import Keys
from comfyart.store.workflows import WorkflowStore
from tests.support.docker import ensure_emulator_image, remove_test_containers, start_engine, stop_engine
from tests.support.emulator import EmulatorProcess
from tests.support.paths import ROOT
from tests.support.ports import free_port, wait_for_port
from tests.support.redis import redis_server_binary


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen([redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
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


@pytest.fixture(scope="session")
def engines() -> Iterator[dict]:
    """Two real Docker engines (two hosts), each with the emulator image; shared by every test that needs them."""
    started = {name: start_engine(name) for name in ("a", "b")}
    try:
        tags = {}
        for engine in started.values():
            with engine.client() as client:
                remove_test_containers(client)
                tags[engine.name] = ensure_emulator_image(client)
        assert len(set(tags.values())) == 1
        yield {"engines": started, "image": tags["a"]}
    finally:
        for engine in started.values():
            with engine.client() as client:
                remove_test_containers(client)
            stop_engine(engine)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as made:
        yield made


@pytest.fixture
def workflows(redis_client) -> WorkflowStore:
    return WorkflowStore(redis_client, Keys("t"))
