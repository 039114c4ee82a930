"""Comfy API v2 end to end: ``comfyart serve`` as a process of its own with auth on (an admin key and two client
keys), over two emulators and the test's redis-server, and the real ``comfy-sdk`` pointed at it the way a user
points it at a self-hosted server: ``COMFY_BASE_URL`` (set only while the client is built, then restored) and the
key as ``api_key=`` or ``COMFY_API_KEY``.

    with v2_server(tmp_path, redis_url, [emulator(), emulator()]) as server:
        with server.sdk("alice") as client:
            job = client.submit(client.workflows.from_json(graph)).wait(timeout=60)

A server can be stopped (SIGTERM, or SIGKILL: a crash) and started again on the same Redis and data directory."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
from comfy_sdk import AsyncComfy, Comfy

from tests.support.daemon import serve_subprocess, static_backends
from tests.support.emulator import EmulatorProcess
from tests.support.paths import ROOT
from tests.support.ports import free_port, wait_for_port

# name -> (key, role); quotas generous enough that no test's pace decides an answer
V2_KEYS: dict[str, tuple[str, str]] = {
    "ops": ("v2-ops-admin-key-0123456789abcdef", "admin"),
    "alice": ("v2-alice-client-key-0123456789abcdef", "client"),
    "bob": ("v2-bob-client-key-0123456789abcdef", "client"),
}
SDK_ENV = ("COMFY_BASE_URL", "COMFY_API_KEY", "COMFY_ROUTER_BASE_URL")
TERMINAL = ("succeeded", "failed", "canceled", "expired")


def v2_config(workdir: Path, redis_url: str, emulators: Sequence[EmulatorProcess],
              **sections: Any) -> dict[str, Any]:
    """The daemon's configuration: the keys of V2_KEYS, ``emulators`` as static backends named emu0, emu1, …;
    ``sections`` replace (or add) whole top-level sections (``api_v2``, ``scheduler``, …)."""
    keys = [{"name": name, "key": key, "role": role} for name, (key, role) in V2_KEYS.items()]
    config: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": free_port()}, "redis": {"url": redis_url},
        "data_dir": str(workdir / "data"), "static_backends": static_backends(*emulators),
        "pool": {"min_containers": 0, "health_interval_s": 0.5}, "scheduler": {"prefetch": 0},
        "tracking": {"silence_s": 2.0},
        "auth": {"keys": keys, "quotas": {"max_queued": 1000, "submissions_per_minute": 60000, "burst": 1000}}}
    config.update(sections)
    return config


class V2Server:
    """One ``comfyart serve`` process (started by ``start``) with its configuration and emulators."""

    def __init__(self, workdir: Path, config: dict[str, Any], emulators: Sequence[EmulatorProcess]) -> None:
        self.workdir = workdir
        self.config = config
        self.emulators = list(emulators)
        self.process: subprocess.Popen | None = None

    @property
    def port(self) -> int:
        return int(self.config["server"]["port"])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @staticmethod
    def key(name: str) -> str:
        return V2_KEYS[name][0]

    def start(self, *, healthy: int | None = None, timeout_s: float = 60.0) -> None:
        """Start the process; return once it answers and ``healthy`` backends (default: all) are healthy."""
        self.process = serve_subprocess(self.config, self.workdir / "comfyart.yaml")
        wait_for_port(self.port, timeout_s=timeout_s)
        wanted = len(self.emulators) if healthy is None else healthy
        deadline = time.monotonic() + timeout_s
        with self.http("ops") as admin:
            while sum(b["status"] == "healthy" for b in admin.get("/api/pool").json()["backends"]) < wanted:
                assert time.monotonic() < deadline, f"{wanted} backends not healthy after {timeout_s} s"
                time.sleep(0.1)

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """End the process with ``sig`` (SIGKILL: as a crash would, to its whole session) and wait for it."""
        if self.process is None or self.process.poll() is not None:
            return
        if sig is signal.SIGKILL:
            os.killpg(self.process.pid, signal.SIGKILL)
        else:
            self.process.send_signal(sig)
        self.process.wait(60)

    def http(self, name: str | None = None) -> httpx.Client:
        """A plain HTTP client to the daemon, with the key of ``name`` (None: no key)."""
        headers = {"Authorization": f"Bearer {self.key(name)}"} if name else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30)

    @contextmanager
    def sdk(self, name: str | None, *, key_from_env: bool = False) -> Iterator[Comfy]:
        """The real ``comfy_sdk.Comfy`` pointed at this server with the key of ``name``: passed as ``api_key=``,
        or (``key_from_env``) read from ``COMFY_API_KEY``."""
        with sdk_client(self.base_url, self.key(name) if name else None, key_from_env=key_from_env) as client:
            yield client

    @asynccontextmanager
    async def async_sdk(self, name: str | None, *, key_from_env: bool = False) -> AsyncIterator[AsyncComfy]:
        """``sdk`` for ``comfy_sdk.AsyncComfy``."""
        async with async_sdk_client(self.base_url, self.key(name) if name else None,
                                    key_from_env=key_from_env) as client:
            yield client

    def prompts_run(self) -> int:
        """How many prompts the emulators took, finished or not: the entries of their own /history plus their
        queues (a prompt counts once, wherever it is)."""
        seen: set[str] = set()
        for emu in self.emulators:
            seen.update(httpx.get(f"{emu.url}/history", timeout=10).json())
            queue = httpx.get(f"{emu.url}/queue", timeout=10).json()
            seen.update(str(item[1]) for part in ("queue_running", "queue_pending") for item in queue[part])
        return len(seen)


@contextmanager
def emulators(workdir: Path, count: int, *args: str) -> Iterator[list[EmulatorProcess]]:
    """``count`` emulator processes (``args`` their command line options) for a block longer than one test (the
    ``emulator`` fixture's are the test's own), each with its base directory under ``workdir``; stopped after."""
    started: list[EmulatorProcess] = []
    try:
        for _ in range(count):
            port = free_port()
            process = subprocess.Popen([sys.executable, "-m", "comfyart.emulator", "--host", "127.0.0.1", "--port",
                                        str(port), "--base-dir", str(workdir / f"emulator-{port}"), *args], cwd=ROOT,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            started.append(EmulatorProcess(port, workdir / f"emulator-{port}", process))
            wait_for_port(port)
        yield started
    finally:
        for emu in started:
            emu.stop()


@contextmanager
def v2_server(workdir: Path, redis_url: str, emulators: Sequence[EmulatorProcess],
              **sections: Any) -> Iterator[V2Server]:
    """A started V2Server (``v2_config``'s configuration), stopped after the block."""
    server = V2Server(workdir, v2_config(workdir, redis_url, emulators, **sections), emulators)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def comfy_environment(base_url: str, api_key: str | None = None) -> Iterator[None]:
    """``COMFY_BASE_URL`` = ``base_url`` and ``COMFY_API_KEY`` = ``api_key`` (unset when None; so is
    ``COMFY_ROUTER_BASE_URL``) for the block; the caller's environment as it was after."""
    saved = {name: os.environ.get(name) for name in SDK_ENV}
    try:
        for name in SDK_ENV:
            os.environ.pop(name, None)
        os.environ["COMFY_BASE_URL"] = base_url
        if api_key is not None:
            os.environ["COMFY_API_KEY"] = api_key
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def sdk_client(base_url: str, api_key: str | None, *, key_from_env: bool = False) -> Iterator[Comfy]:
    """``comfy_sdk.Comfy`` for ``base_url`` (the environment holds it while the client is built only)."""
    with comfy_environment(base_url, api_key if key_from_env else None):
        client = Comfy(api_key=None if key_from_env else api_key)
    with client:
        yield client


@asynccontextmanager
async def async_sdk_client(base_url: str, api_key: str | None, *,
                           key_from_env: bool = False) -> AsyncIterator[AsyncComfy]:
    with comfy_environment(base_url, api_key if key_from_env else None):
        client = AsyncComfy(api_key=None if key_from_env else api_key)
    async with client:
        yield client


def wait_for_job(http: httpx.Client, job_id: str, condition: Sequence[str] = TERMINAL,
                 timeout_s: float = 60.0) -> dict[str, Any]:
    """Poll GET /api/v2/jobs/{id} (as the SDK does) until its status is one of ``condition``; that Job."""
    deadline = time.monotonic() + timeout_s
    while True:
        answer = http.get(f"/api/v2/jobs/{job_id}")
        job: dict[str, Any] = answer.json()
        if answer.status_code == 200 and job["status"] in condition:
            return job
        assert time.monotonic() < deadline, f"job {job_id} not {'/'.join(condition)} after {timeout_s} s: {job}"
        time.sleep(0.1)
