"""Replicas under test (issue 24): ``running_replica`` is ``running_daemon`` that also yields the built ``Daemon``
(its registry on ``daemon.replica`` and ``services.replica``), optionally with the role its heartbeat reports
overridden (``leading``), for a test of what a standby shows while the lease itself names this process."""
from __future__ import annotations

import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from comfyart.config.settings import Settings
from tests.support.daemon import running_daemon, serve_subprocess
from tests.support.emulator import EmulatorProcess
from tests.support.graphs import text_to_image_graph
from tests.support.ports import wait_for_port
from tests.support.v2 import V2Server, v2_config


@asynccontextmanager
async def running_replica(settings: Settings, *, leading: Callable[[], bool] | None = None,
                          ) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """``running_daemon``; yields the HTTP client and the built ``Daemon``."""
    from comfyart import daemon

    original, built = daemon.build, []

    async def build(*args: Any, **kwargs: Any) -> Any:
        made = await original(*args, **kwargs)
        if leading is not None:
            made.replica.heartbeat.leading = leading
        built.append(made)
        return made

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(daemon, "build", build)
        async with running_daemon(settings) as client:
            yield client, built[0]


# ---------------------------------------------------------------------------------------------------- processes
# Several ``comfyart serve`` processes on one redis-server, over the same emulators (``tests/support/v2``'s server
# with a ``cluster`` section of short leases): what the failover tests start, stop, pause and read.
TEST_CLUSTER = {"lease_s": 2.0, "renew_interval_s": 0.5, "standby_poll_s": 0.25, "heartbeat_s": 0.5}


class ReplicaProcess(V2Server):
    """One replica: ``name`` is its ``cluster.name``; its configuration, data and log (``log()``) in a directory
    of its own."""

    def __init__(self, workdir: Path, redis_url: str, emulators: Sequence[EmulatorProcess], name: str,
                 **sections: Any) -> None:
        home = workdir / name
        home.mkdir(parents=True, exist_ok=True)
        config = v2_config(home, redis_url, emulators, **sections)
        config["cluster"] = {**TEST_CLUSTER, "name": name, **config.get("cluster", {})}
        super().__init__(home, config, emulators)
        self.name = name

    def start(self, *, healthy: int | None = None, timeout_s: float = 60.0) -> None:
        """Start it; return once it is in the registry (a standby has no pool of its own to wait for)."""
        del healthy
        self.process = serve_subprocess(self.config, self.workdir / "comfyart.yaml")
        wait_for_port(self.port, timeout_s=timeout_s)
        deadline = time.monotonic() + timeout_s
        while self.name not in {r["name"] for r in self.cluster()["replicas"]}:
            assert time.monotonic() < deadline, f"{self.name} not joined after {timeout_s} s"
            time.sleep(0.05)

    def cluster(self) -> dict[str, Any]:
        with self.http("ops") as admin:
            answer: dict[str, Any] = admin.get("/api/cluster").json()
        return answer

    def log(self) -> str:
        return (self.workdir / "serve.log").read_text()

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        os.kill(self.process.pid, sig)

    def submit(self, count: int, seed: int = 0) -> list[str]:
        """``count`` tasks through REST, as client alice; their ids."""
        with self.http("alice") as alice:
            return [alice.post("/api/tasks", json={"prompt": text_to_image_graph(seed=seed + i)}).json()["id"]
                    for i in range(count)]


def leader_of(replicas: Sequence[ReplicaProcess], timeout_s: float = 20.0) -> ReplicaProcess:
    """The replica every one of ``replicas`` names as the leader, once they agree."""
    deadline = time.monotonic() + timeout_s
    while True:
        names = {(r.cluster()["leader"] or {}).get("name") for r in replicas}
        leader = next((r for r in replicas if names == {r.name}), None)
        if leader is not None:
            return leader
        assert time.monotonic() < deadline, f"no leader agreed on after {timeout_s} s: {names}"
        time.sleep(0.05)


def tasks_of(replica: ReplicaProcess, ids: Sequence[str]) -> list[dict[str, Any]]:
    with replica.http("ops") as admin:
        return [admin.get(f"/api/tasks/{task_id}").json() for task_id in ids]


def wait_completed(replica: ReplicaProcess, ids: Sequence[str], timeout_s: float = 120.0) -> list[dict[str, Any]]:
    """The records of ``ids`` once every one is final (asserted completed), read through ``replica``."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = tasks_of(replica, ids)  # an answer with no status is an error (Redis away a moment): read again
        if all(r.get("status") in ("completed", "failed", "canceled") for r in records):
            assert [r["id"] for r in records if r["status"] != "completed"] == []
            return records
        assert time.monotonic() < deadline, f"{sum(r.get('status') != 'completed' for r in records)} tasks not done"
        time.sleep(0.25)


def prompt_ids(emulators: Sequence[EmulatorProcess]) -> list[str]:
    """Every prompt the emulators took, from their own /history and queues, with repeats (one prompt id taken
    by two backends appears twice)."""
    seen: list[str] = []
    for emu in emulators:
        seen += list(httpx.get(f"{emu.url}/history", timeout=10).json())
        queue = httpx.get(f"{emu.url}/queue", timeout=10).json()
        seen += [str(item[1]) for part in ("queue_running", "queue_pending") for item in queue[part]]
    return seen


def assert_each_ran_once(records: Sequence[dict[str, Any]], emulators: Sequence[EmulatorProcess]) -> None:
    """Every task's prompt ran once, and no other prompt ran: exactly once per task."""
    ran = prompt_ids(emulators)
    assert len(ran) == len(set(ran)), "a prompt id taken twice"
    assert sorted(ran) == sorted(r["prompt_id"] for r in records)


@contextmanager
def replica_set(workdir: Path, redis_url: str, emulators: Sequence[EmulatorProcess], count: int = 2,
                **sections: Any) -> Iterator[list[ReplicaProcess]]:
    """``count`` replicas r0, r1, … started one after the other (r0 leads first); each killed at the end, a paused
    one woken first."""
    started = [ReplicaProcess(workdir, redis_url, emulators, f"r{i}", **sections) for i in range(count)]
    try:
        for replica in started:
            replica.start()
        yield started
    finally:
        for replica in started:
            if replica.process is not None and replica.process.poll() is None:
                replica.signal(signal.SIGCONT)
            replica.stop(signal.SIGKILL)


def all_tasks(replica: ReplicaProcess) -> list[dict[str, Any]]:
    """Every task record (no graphs), through ``replica``, as the admin sees them."""
    records: list[dict[str, Any]] = []
    with replica.http("ops") as admin:
        while True:
            page = admin.get("/api/tasks", params={"limit": 500, "offset": len(records)}).json()
            records += page["tasks"]
            if len(records) >= page["total"] or not page["tasks"]:
                return records


def output_files(replicas: Sequence[ReplicaProcess]) -> list[str]:
    """The output files every replica holds (relative to its data_dir/outputs), with repeats."""
    found: list[str] = []
    for replica in replicas:
        root = Path(replica.config["data_dir"]) / "outputs"
        found += [str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()] if root.exists() else []
    return found


@contextmanager
def leader_and_standby(workdir: Path, redis_url: str, emulators: Sequence[EmulatorProcess],
                       ) -> Iterator[tuple[ReplicaProcess, ReplicaProcess]]:
    """Two replicas (``replica_set``), as (the one that leads, the other)."""
    with replica_set(workdir, redis_url, emulators, 2) as pair:
        leader = leader_of(pair)
        yield leader, next(r for r in pair if r is not leader)


def eventually(check: Callable[[], Any], what: str, timeout_s: float = 20.0) -> Any:
    """``check()`` once it answers something true (polled every 0.1 s); fails after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not (answer := check()):
        assert time.monotonic() < deadline, f"not after {timeout_s} s: {what}"
        time.sleep(0.1)
    return answer
