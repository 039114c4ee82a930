"""The contract every provider keeps (``pool.providers.base.Provider``), checked on each real one: containers on a
real Docker engine, processes on this machine. The pool relies on exactly this: a spawned backend answers, ``check``
says whether it runs and why not, ``leftovers`` finds what an earlier run left, ``logs`` shows its last lines,
``remove`` stops it for good (twice is no error), and a start that cannot happen says why."""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from comfyart.config.fleet import DockerConfig, DockerHostConfig, ProcessConfig
from comfyart.errors import ContainerFailed
from comfyart.policy.placement import Placement
from comfyart.pool.providers.base import Provider, Spawned
from comfyart.pool.providers.docker import DockerProvider
from comfyart.pool.providers.process import HOST_NAME, ProcessProvider
from tests.support.docker import remove_test_containers
from tests.support.ports import free_port_range

EMULATOR = ["-m", "comfyart.emulator", "--host", "{address}", "--port", "{port}"]


@dataclass
class Case:
    """A provider under test: ``make(broken)`` builds it (``broken``: its backends cannot start) on ``host``,
    whose ports are ``ports``."""

    make: Callable[[bool], Provider]
    host: str
    ports: tuple[int, int]


def process_case(tmp_path: Path) -> Case:
    ports = free_port_range(2)

    def make(broken: bool) -> Provider:
        command = ["/nonexistent/python"] if broken else ["{python}", *EMULATOR, "--base-dir", str(tmp_path / "emu")]
        return ProcessProvider(ProcessConfig(command=command, ports=ports, startup_timeout=20),
                               data_dir=tmp_path / "data")
    return Case(make, HOST_NAME, ports)


def docker_case(engines: dict) -> Case:
    ports = free_port_range(2)

    def make(broken: bool) -> Provider:
        host = DockerHostConfig(name="host-a", url=engines["engines"]["a"].url, address="127.0.0.1", ports=ports)
        image = "comfyart-emulator:no-such-tag" if broken else engines["image"]
        config = DockerConfig(image=image, command=["python3", *EMULATOR, "--base-dir", "/tmp/emulator"],
                              startup_timeout=60, hosts=[host])
        return DockerProvider(config, instance="contract")
    return Case(make, "host-a", ports)


@pytest.fixture(params=["process", pytest.param("docker", marks=pytest.mark.docker)])
async def case(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Case]:
    made = process_case(tmp_path) if request.param == "process" else docker_case(request.getfixturevalue("engines"))
    yield made
    if request.param == "docker":  # nothing of this test may outlive it on the shared engines
        for engine in request.getfixturevalue("engines")["engines"].values():
            with engine.client() as client:
                remove_test_containers(client)


async def answers(spawned: Spawned, timeout_s: float) -> bool:
    """Whether the backend answers /system_stats within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get(spawned.url + "/system_stats")).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    return False


async def test_a_spawned_backend_runs_is_found_again_logs_and_is_removed_for_good(case: Case):
    provider = case.make(False)
    try:
        await provider.ping(case.host)
        spawned = await provider.spawn(Placement(case.host, case.ports[0], None))
        assert (spawned.host, spawned.port, spawned.kind) == (case.host, case.ports[0], provider.kind)
        assert spawned.backend_id == f"{provider.kind}:{case.host}:{case.ports[0]}"
        assert await answers(spawned, provider.startup_timeout_s), "the backend never answered /system_stats"
        assert await provider.check(spawned) is None

        found = await provider.leftovers()  # what the next run would find
        assert [(s.backend_id, s.running) for s in found] == [(spawned.backend_id, True)]
        assert f"listening on http://127.0.0.1:{case.ports[0]}" in await provider.logs(spawned)

        await provider.remove(spawned)
        assert not await answers(spawned, 1.0)
        assert await provider.check(spawned) is not None  # why it stopped: it is gone
        assert await provider.leftovers() == []
        await provider.remove(spawned)  # removing what is gone is no error
    finally:
        await provider.close()


async def test_a_backend_that_cannot_start_is_reported_with_why(case: Case):
    provider = case.make(True)
    try:
        placement = Placement(case.host, case.ports[0], None)
        try:
            spawned = await provider.spawn(placement)
        except ContainerFailed as exc:  # refused at once (no image on the host, no such program)
            assert str(exc)
        else:  # or it started and stopped at once: check says so
            deadline = time.monotonic() + 10
            while (reason := await provider.check(spawned)) is None:
                assert time.monotonic() < deadline, "a backend that cannot start still looks like it runs"
                await asyncio.sleep(0.1)
            assert reason
            await provider.remove(spawned)
        assert [s for s in await provider.leftovers() if s.running] == []
    finally:
        await provider.close()
