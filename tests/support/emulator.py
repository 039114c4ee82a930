"""An emulator process the ``emulator`` fixture started, and plain HTTP calls to one (a prompt in, its history
entry out)."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import httpx


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


def post_prompt(url: str, graph: dict) -> str:
    response = httpx.post(url + "/prompt", json={"prompt": graph, "client_id": "test"})
    response.raise_for_status()
    return response.json()["prompt_id"]


def wait_history(url: str, prompt_id: str, timeout_s: float = 10) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        entry = httpx.get(f"{url}/history/{prompt_id}").json()
        if entry:
            return entry[prompt_id]
        time.sleep(0.05)
    raise AssertionError("no history entry")
