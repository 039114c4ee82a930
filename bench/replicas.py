"""Benchmark helpers for several ``comfyart serve`` replicas on one redis-server (issue 24), shared by
``bench/failover.py`` and ``bench/scheduling.py --only replication``: a replica process that can be killed and
started again under the same name and configuration, and WebSocket clients of ``/api/events`` that follow every
task on the replicas they are attached to (in a thread of their own, so the benchmark's own loop stays free)."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import ROOT, free_port, wait_port  # noqa: E402


class Replica:
    """One ``comfyart serve`` with ``cluster.name`` = ``name``; its configuration and log in ``workdir/name``. The
    port and the configuration stay the same across restarts (a restarted replica is the same replica)."""

    def __init__(self, workdir: Path, redis_url: str, prefix: str, name: str, backends: list[str],
                 **sections: dict[str, Any]) -> None:
        self.name = name
        self.home = workdir / name
        self.home.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}"
        config: dict[str, Any] = {
            "server": {"host": "127.0.0.1", "port": self.port}, "redis": {"url": redis_url, "prefix": prefix},
            "data_dir": str(self.home / "data"), "pool": {"min_containers": 0},
            "static_backends": [{"name": f"b{i}", "url": url} for i, url in enumerate(backends)],
            "cluster": {"name": name}}
        for key, value in sections.items():
            config[key] = {**config.get(key, {}), **value}
        self.config_path = self.home / "comfyart.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60.0) -> None:
        """Start it; return once it is in the registry (a standby has no pool of its own to wait for)."""
        with (self.home / "serve.log").open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "comfyart", "serve", "--config", str(self.config_path), "--log-level",
                 "warning"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_port(self.port, timeout_s)
        deadline = time.monotonic() + timeout_s
        while self.name not in {r["name"] for r in self.cluster().get("replicas", [])}:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} not in the registry after {timeout_s} s")
            time.sleep(0.05)

    def cluster(self) -> dict[str, Any]:
        answer: dict[str, Any] = httpx.get(self.api + "/api/cluster", timeout=10).json()
        return answer

    def leader(self) -> str | None:
        return (self.cluster().get("leader") or {}).get("name")

    def kill(self) -> None:
        """SIGKILL, and reap it."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def agreed_leader(replicas: list[Replica], timeout_s: float = 30.0) -> Replica:
    """The replica that every one of ``replicas`` names as the leader, once they agree."""
    deadline = time.monotonic() + timeout_s
    while True:
        names = {r.leader() for r in replicas}
        leader = next((r for r in replicas if names == {r.name}), None)
        if leader is not None:
            return leader
        if time.monotonic() > deadline:
            raise TimeoutError(f"no leader agreed on after {timeout_s} s: {names}")
        time.sleep(0.05)


class EventClients:
    """``per_api`` WebSocket clients of ``/api/events`` on each of ``apis``, reading every event (no filter: each
    client follows every task), in a thread with its own event loop. ``completed[api]`` counts the completions
    each api's clients heard (summed over its clients), ``lagged`` the streams a replica cut for falling behind."""

    def __init__(self, apis: list[str], per_api: int = 1) -> None:
        self.apis = apis
        self.per_api = per_api
        self.completed = dict.fromkeys(apis, 0)
        self.events = dict.fromkeys(apis, 0)
        self.lagged = 0
        self.connected = 0
        self._loop = asyncio.new_event_loop()
        self._stopped: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._run(),), daemon=True)

    def __enter__(self) -> EventClients:
        self._thread.start()
        deadline = time.monotonic() + 60
        while self.connected < len(self.apis) * self.per_api:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise TimeoutError(f"{self.connected} event clients connected")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(30)
        self._loop.close()

    def wait_completed(self, count: int, timeout_s: float = 30.0) -> bool:
        """Whether every client heard ``count`` completions within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while min(self.completed.values()) < count * self.per_api:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    async def _run(self) -> None:
        self._stopped = asyncio.Event()
        async with aiohttp.ClientSession() as session:
            clients = [asyncio.create_task(self._client(session, api)) for api in self.apis
                       for _ in range(self.per_api)]
            await self._stopped.wait()
            for client in clients:
                client.cancel()
            await asyncio.gather(*clients, return_exceptions=True)

    async def _client(self, session: aiohttp.ClientSession, api: str) -> None:
        async with session.ws_connect(api.replace("http", "ws", 1) + "/api/events", max_msg_size=0) as ws:
            self.connected += 1
            async for message in ws:
                event = json.loads(message.data)
                self.events[api] += 1
                if event.get("type") == "lagged":
                    self.lagged += 1
                elif (event.get("type") == "task" and event.get("status") == "completed"
                      and event.get("previous") != "completed"):
                    self.completed[api] += 1
