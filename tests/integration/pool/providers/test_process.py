"""ComfyUI as local subprocesses: the demo configuration, failed starts, and leftovers of a killed run."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from comfyart.config.fleet import ProcessConfig
from comfyart.errors import ContainerFailed
from comfyart.policy.placement import Placement
from comfyart.pool.providers.process import HOST_NAME, ProcessProvider
from tests.support.daemon import (
    healthy_count,
    make_settings,
    running_daemon,
    serve_subprocess,
    wait_for_pool,
    wait_for_task_sync,
    wait_for_tasks,
)
from tests.support.graphs import basic_graph, text_to_image_graph
from tests.support.paths import ROOT
from tests.support.ports import free_port, free_port_range, wait_for_port


def processes(ports: tuple, *extra: str, gpus: list | None = None) -> dict:
    return {"command": ["{python}", "-m", "comfyart.emulator", "--host", "{address}", "--port", "{port}", *extra],
            "address": "127.0.0.1", "ports": list(ports), "gpus": gpus or [], "startup_timeout": 20}


async def test_min_containers_processes_run_tasks_and_stop_with_the_daemon(tmp_path: Path, redis_url):
    ports = free_port_range(4)
    settings = make_settings(tmp_path, redis_url, processes=processes(ports, gpus=[0, 1]),
                             pool={"min_containers": 2, "max_containers": 2})
    async with running_daemon(settings) as api:
        pool = await wait_for_pool(api, lambda p: healthy_count(p) == 2)
        backends = pool["backends"]
        assert sorted(b["gpu"] for b in backends) == [0, 1] and all(b["kind"] == "process" for b in backends)
        # the emulator reports the GPU it was pinned to through CUDA_VISIBLE_DEVICES
        stats = httpx.get(backends[0]["url"] + "/system_stats").json()
        assert stats["devices"][0]["type"] == "cuda" and f"GPU {backends[0]['gpu']}" in stats["devices"][0]["name"]
        ids = [(await api.post("/api/tasks", json={"prompt": text_to_image_graph(seed=i)})).json()["id"]
               for i in range(4)]
        records = await wait_for_tasks(api, ids)
        assert [r["status"] for r in records] == ["completed"] * 4
        assert all(r["outputs"][0]["content_type"] == "image/png" for r in records)
        pids = list((settings.data_dir / "processes").glob("*.json"))
        assert len(pids) == 2
        # the last lines of a backend's own log
        logs = (await api.get(f"/api/pool/backends/{backends[0]['id']}/logs", params={"lines": 5})).json()
        assert logs["backend"] == backends[0]["id"] and 1 <= len(logs["lines"]) <= 5
        assert any(f"listening on http://127.0.0.1:{backends[0]['port']}" in line for line in logs["lines"])
        assert (await api.get("/api/pool/backends/nope/logs")).status_code == 404
    for backend in backends:  # a clean stop stops the processes it started
        port = int(backend["port"])
        with __import__("socket").socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0
    assert list((settings.data_dir / "processes").glob("*.json")) == []


@pytest.mark.parametrize("script, timeout_s, expected", [
    pytest.param("import sys; print('boom: no model found'); sys.exit(3)", 10,
                 ["exited with code 3", "boom: no model found"], id="exits at start"),
    pytest.param("import time; print('loading...', flush=True); time.sleep(60)", 1.5,
                 ["did not answer /system_stats within 1.5 s", "loading..."], id="never answers"),
])
async def test_a_backend_that_fails_to_start_is_reported_with_its_last_log_lines(tmp_path: Path, redis_url, script,
                                                                                  timeout_s, expected):
    broken = {"command": ["{python}", "-c", script], "ports": list(free_port_range(2)), "startup_timeout": timeout_s}
    settings = make_settings(tmp_path, redis_url, processes=broken, pool={"min_containers": 1, "max_containers": 1})
    async with running_daemon(settings) as api:
        pool = await wait_for_pool(api, lambda p: p["recent_errors"])
    [error, *_] = pool["recent_errors"]
    assert all(text in error["error"] for text in expected), error
    assert pool["backends"] == []


def test_a_process_left_by_a_killed_daemon_is_adopted_at_the_next_start(tmp_path: Path, redis_url):
    port = free_port()
    ports = free_port_range(2)
    config = {"server": {"port": port}, "redis": {"url": redis_url}, "data_dir": str(tmp_path / "data"),
              "processes": processes(ports), "pool": {"min_containers": 1, "max_containers": 1,
                                                      "health_interval_s": 0.5}}

    def serve() -> subprocess.Popen:
        return serve_subprocess(config, tmp_path / "c.yaml")

    def healthy_pid() -> int:
        wait_for_port(port)
        for _ in range(200):
            backends = httpx.get(f"http://127.0.0.1:{port}/api/pool").json()["backends"]
            if backends and backends[0]["status"] == "healthy":
                break
            time.sleep(0.1)
        [pid_file] = (tmp_path / "data" / "processes").glob("*.json")
        return int(yaml.safe_load(pid_file.read_text())["pid"])

    first = serve()
    try:
        orphan = healthy_pid()
    finally:
        os.kill(first.pid, signal.SIGKILL)  # the daemon only: its emulator child survives in its own session
        first.wait()
    assert _alive(orphan)
    second = serve()
    try:
        assert healthy_pid() == orphan  # adopted, not restarted
        task = httpx.post(f"http://127.0.0.1:{port}/api/tasks", json={"prompt": basic_graph()}).json()
        assert wait_for_task_sync(port, task["id"])["status"] == "completed"
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)
    assert not _alive(orphan)  # the clean stop stopped the adopted process too


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] != "Z"


async def test_a_backend_that_crashes_mid_task_loses_no_task(tmp_path: Path, redis_url):
    ports = free_port_range(6)
    settings = make_settings(tmp_path, redis_url, processes=processes(ports, "--node-seconds", "0.1"),
                             pool={"min_containers": 2, "max_containers": 2})
    async with running_daemon(settings) as api:
        pool = await wait_for_pool(api, lambda p: healthy_count(p) == 2)
        doomed = pool["backends"][0]
        httpx.post(doomed["url"] + "/emulator/control", json={"crash_on_prompt": True}).raise_for_status()
        ids = [(await api.post("/api/tasks", json={"prompt": basic_graph(color=i)})).json()["id"] for i in range(6)]
        records = await wait_for_tasks(api, ids, timeout_s=60)
        assert [r["status"] for r in records] == ["completed"] * 6
        assert any(r["attempts"] == 2 for r in records)  # the crashed backend's task ran again elsewhere
        pool = (await api.get("/api/pool")).json()
        same_id = [b for b in pool["backends"] if b["id"] == doomed["id"]]
        assert all(b["created_ms"] != doomed["created_ms"] for b in same_id)  # a replacement, if any
        assert len(pool["backends"]) == 2  # min_containers is kept up
        assert any("exited with code 3" in e["error"] for e in pool["recent_errors"])


async def test_containers_are_recycled_after_max_tasks_and_on_request_without_losing_work(tmp_path: Path, redis_url):
    ports = free_port_range(3)
    settings = make_settings(tmp_path, redis_url, processes=processes(ports),
                             pool={"min_containers": 1, "max_containers": 1, "max_tasks": 2})
    async with running_daemon(settings) as api:
        await wait_for_pool(api, lambda p: healthy_count(p) == 1)
        ids = [(await api.post("/api/tasks", json={"prompt": basic_graph(color=i)})).json()["id"] for i in range(5)]
        records = await wait_for_tasks(api, ids)
        assert [r["status"] for r in records] == ["completed"] * 5
        assert all(r["history"] == [] and r["attempts"] == 1 for r in records)  # drained, never cut short
        # at most 2 tasks per container: the 5 needed 3 containers, so 2 recycles at least
        pool = await wait_for_pool(api, lambda p: p["counters"]["recycled"] >= 2 and healthy_count(p) == 1)
        assert pool["counters"]["lost"] == 0
        [current] = (await wait_for_pool(api, lambda p: healthy_count(p) == 1))["backends"]
        recycled = await api.post(f"/api/pool/backends/{current['id']}/recycle")
        assert recycled.status_code == 200
        pool = await wait_for_pool(api, lambda p: healthy_count(p) == 1 and
                                   p["backends"][0]["created_ms"] != current["created_ms"], timeout_s=30)
        task_id = (await api.post("/api/tasks", json={"prompt": basic_graph(color=99)})).json()["id"]
        [task] = await wait_for_tasks(api, [task_id])
        assert task["status"] == "completed" and task["backend"] == pool["backends"][0]["id"]


async def test_processes_run_in_the_configured_working_directory(tmp_path: Path):
    """ComfyUI's ``python main.py`` needs its folder as the working directory; the relative ``--base-dir`` shows
    where the backend really ran."""
    working_dir, [port, _] = tmp_path / "ComfyUI", free_port_range(2)
    working_dir.mkdir()
    command = ["{python}", "-m", "comfyart.emulator", "--host", "{address}", "--port", "{port}", "--base-dir",
               "emulated-{port}"]
    provider = ProcessProvider(ProcessConfig(command=command, ports=(port, port + 1), working_dir=working_dir,
                                             env={"PYTHONPATH": str(ROOT)}),  # comfyart from elsewhere
                               data_dir=tmp_path / "data")
    spawned = await provider.spawn(Placement(HOST_NAME, port, None))
    try:
        assert Path(f"/proc/{spawned.handle}/cwd").resolve() == working_dir.resolve()
        wait_for_port(port, timeout_s=20)
        assert (working_dir / f"emulated-{port}").is_dir()
    finally:
        await provider.remove(spawned)
    missing = ProcessProvider(ProcessConfig(command=command, ports=(port, port + 1), working_dir=tmp_path / "nope"),
                              data_dir=tmp_path / "data")
    with pytest.raises(ContainerFailed, match=r"^cannot start '.+' in working_dir '.+/nope': No such file"):
        await missing.spawn(Placement(HOST_NAME, port, None))
