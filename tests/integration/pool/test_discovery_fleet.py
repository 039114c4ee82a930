"""Backends found by DNS, in a daemon: four emulators on 127.0.0.2..5 (one port), a DNS name that resolves to some
of them (the tests' DNS server), 100 tasks; addresses are added and removed while they run."""
from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.daemon import make_settings, running_daemon, wait_for_pool, wait_for_tasks
from tests.support.dns import dns_server
from tests.support.graphs import basic_graph
from tests.support.paths import ROOT
from tests.support.ports import free_port, wait_for_port

NAME = "comfyui.gpu.svc.cluster.local"
HOSTS = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]
SLOW = HOSTS[0]  # the one removed while busy: its prompts take long enough to be caught running
INTERVAL_S = 0.5


@pytest.fixture
def fleet_port(tmp_path: Path) -> Iterator[int]:
    """An emulator on each of HOSTS, all on one port (as a Deployment's pods behind a headless Service)."""
    port = free_port()
    processes = []
    for host in HOSTS:
        seconds = "1.0" if host == SLOW else "0.05"
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "comfyart.emulator", "--host", host, "--port", str(port), "--base-dir",
             str(tmp_path / f"emulator-{host}"), "--node-seconds", seconds], cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        for host in HOSTS:
            wait_for_port(port, host)
        yield port
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(10)


def backend(pool: dict, host: str) -> dict | None:
    return next((b for b in pool["backends"] if b["id"] == f"dns:{NAME}:{host}"), None)


def working(host: str):
    def condition(pool: dict) -> bool:
        found = backend(pool, host)
        return found is not None and (found["inflight"] > 0 or found["tasks_done"] > 0)
    return condition


async def test_backends_join_and_drain_as_the_name_changes_and_every_task_runs_once(tmp_path, redis_url,
                                                                                    fleet_port):
    async with dns_server(NAME, HOSTS[:2]) as server:
        settings = make_settings(tmp_path, redis_url, dns_backends=[
            {"name": NAME, "port": fleet_port, "nameserver": server.nameserver, "interval_s": INTERVAL_S,
             "timeout_s": 0.5}])
        async with running_daemon(settings) as api:
            ids = [(await api.post("/api/tasks", json={"prompt": basic_graph(color=i)})).json()["id"]
                   for i in range(100)]
            await wait_for_pool(api, lambda pool: all(working(h)(pool) for h in HOSTS[:2]), timeout_s=20)

            server.addresses.extend(HOSTS[2:])  # two pods more: they take work within the interval
            added = time.monotonic()
            await wait_for_pool(api, lambda pool: all(working(h)(pool) for h in HOSTS[2:]), timeout_s=20)
            joined_s = time.monotonic() - added

            server.addresses.remove(SLOW)  # a pod going away while it runs a prompt: that prompt finishes there
            caught = await wait_for_pool(api, lambda pool: (found := backend(pool, SLOW)) is not None
                                         and found["mode"] == "draining" and found["inflight"] > 0, timeout_s=20)
            finishing = backend(caught, SLOW)["tasks"]
            await wait_for_pool(api, lambda pool: backend(pool, SLOW) is None, timeout_s=20)  # then it leaves

            records = await wait_for_tasks(api, ids, timeout_s=120)

    assert joined_s < INTERVAL_S + 4, joined_s  # a lookup, a probe, the inventory read, a dispatch
    assert [r["status"] for r in records] == ["completed"] * 100, [r for r in records if r["status"] != "completed"]
    assert all(r["attempts"] == 1 for r in records)
    by_task = {r["id"]: r for r in records}
    assert finishing and all(by_task[t]["backend"] == f"dns:{NAME}:{SLOW}" for t in finishing)
    # every task ran exactly once, on the backend its record names: counted in the emulators' /history
    ran: dict[str, str] = {}
    async with httpx.AsyncClient() as plain:
        for host in HOSTS:
            history = (await plain.get(f"http://{host}:{fleet_port}/history")).json()
            for prompt_id in history:
                assert prompt_id not in ran, f"prompt {prompt_id} ran on {ran[prompt_id]} and {host}"
                ran[prompt_id] = host
    assert sorted(ran) == sorted(r["prompt_id"] for r in records)
    assert all(ran[r["prompt_id"]] == r["backend"].rsplit(":", 1)[1] for r in records)
    assert set(ran.values()) == set(HOSTS)  # the added ones worked, the removed one had worked
