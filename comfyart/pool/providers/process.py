"""ComfyUI backends as local subprocesses, for a workstation without Docker (and for the demo).

Each process gets its own session (so its whole group can be stopped) and a pid file under the data directory,
which lets the next start find and stop what a killed run left behind.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections import deque
from pathlib import Path

from comfyart.config.fleet import ProcessConfig
from comfyart.errors import ContainerFailed
from comfyart.policy.placement import Placement
from comfyart.pool.providers.base import HostSpec, Spawned, render_command

HOST_NAME = "local"
STOP_GRACE_S = 10.0  # after SIGTERM, then SIGKILL


class ProcessProvider:
    kind = "process"

    def __init__(self, config: ProcessConfig, *, data_dir: Path) -> None:
        self.config = config
        self.state_dir = data_dir / "processes"
        self.log_dir = data_dir / "logs"
        self.hosts = [HostSpec(HOST_NAME, config.address, config.ports, tuple(config.gpus),
                               frozenset(config.tags), config.weight)]
        self.startup_timeout_s = config.startup_timeout
        self.image = ""
        self._processes: dict[str, asyncio.subprocess.Process] = {}

    def _log_path(self, port: int) -> Path:
        return self.log_dir / f"process-{port}.log"

    async def spawn(self, placement: Placement) -> Spawned:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        argv = render_command(self.config.command, address=self.config.address, port=placement.port,
                              gpu=placement.gpu, python=sys.executable)
        env = {**os.environ, **self.config.env}
        if placement.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(placement.gpu)
        try:
            with open(self._log_path(placement.port), "ab") as log:
                process = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                               stdout=log, stderr=log, env=env,
                                                               cwd=self.config.working_dir, start_new_session=True)
        except OSError as exc:
            working_dir = self.config.working_dir
            if working_dir is not None and str(exc.filename) == str(working_dir):  # the directory, not the program
                raise ContainerFailed(f"cannot start {argv[0]!r} in working_dir {str(working_dir)!r}: "
                                      f"{exc.strerror}") from exc
            raise ContainerFailed(f"cannot start {argv[0]!r}: {exc.strerror}") from exc
        (self.state_dir / f"{placement.port}.json").write_text(json.dumps({"pid": process.pid, "argv": argv}))
        self._processes[str(process.pid)] = process
        return Spawned("process", HOST_NAME, self.config.address, placement.port, placement.gpu, str(process.pid),
                       f"process-{placement.port}")

    async def check(self, backend: Spawned) -> str | None:
        process = self._processes.get(backend.handle)
        if process is None:
            return None if _alive(int(backend.handle)) else "process is gone"
        if process.returncode is None:
            return None
        logs = await self.logs(backend)
        reason = f"process exited with code {process.returncode}"
        return f"{reason}; last log lines:\n{logs}" if logs else reason

    async def remove(self, backend: Spawned) -> None:
        pid = int(backend.handle)
        process = self._processes.pop(backend.handle, None)
        _signal_group(pid, signal.SIGTERM)
        if process is not None:
            try:
                await asyncio.wait_for(process.wait(), STOP_GRACE_S)
            except TimeoutError:
                _signal_group(pid, signal.SIGKILL)
                await process.wait()
        else:
            # adopted after a restart: not our child, so watched until it is gone rather than waited for
            deadline = time.monotonic() + STOP_GRACE_S
            while _alive(pid) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if _alive(pid):
                _signal_group(pid, signal.SIGKILL)
        (self.state_dir / f"{backend.port}.json").unlink(missing_ok=True)

    async def leftovers(self) -> list[Spawned]:
        found: list[Spawned] = []
        if not self.state_dir.is_dir():
            return found
        for pid_file in self.state_dir.glob("*.json"):
            try:
                record = json.loads(pid_file.read_text())
                pid, port = int(record["pid"]), int(pid_file.stem)
            except (ValueError, KeyError, OSError):
                pid_file.unlink(missing_ok=True)
                continue
            if _alive(pid) and _cmdline(pid) == record.get("argv"):
                found.append(Spawned("process", HOST_NAME, self.config.address, port, None, str(pid),
                                     f"process-{port}", running=True))
            else:
                pid_file.unlink(missing_ok=True)
        return found

    async def ping(self, host: str) -> None:
        return None  # the local machine is always there

    async def logs(self, backend: Spawned, lines: int = 20) -> str:
        path = self._log_path(backend.port)
        if not path.exists():
            return ""
        with open(path, errors="replace") as log:
            return "".join(deque(log, maxlen=lines)).strip()

    async def close(self) -> None:
        return None


def _alive(pid: int) -> bool:
    """Running: a zombie (exited, not yet reaped by the parent it was handed to) is gone for us."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
