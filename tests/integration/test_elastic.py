"""Failover, cancel, run-time backends and pool controls, and recovery from SIGKILL, against a real redis-server
and emulator processes as static backends. (Containers and Docker hosts: pool/providers/test_docker.py.)"""
from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx

from tests.support.daemon import make_settings, running_daemon, serve_subprocess, wait_for_pool, wait_for_tasks
from tests.support.graphs import basic_graph, text_to_image_graph
from tests.support.ports import free_port, wait_for_port


def static(**emulators) -> list:
    return [{"name": name, "url": e.url} for name, e in emulators.items()]


async def wait_for_status(api: httpx.AsyncClient, task_id: str, status: str, timeout_s: float = 20) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        record = (await api.get(f"/api/tasks/{task_id}")).json()
        if record["status"] == status:
            return record
        assert time.monotonic() < deadline, f"task never became {status}: {record}"
        await asyncio.sleep(0.05)


def backend(pool: dict, backend_id: str) -> dict:
    return next(b for b in pool["backends"] if b["id"] == backend_id)


async def test_a_hung_backend_times_out_and_the_task_is_retried_elsewhere(tmp_path: Path, redis_url, emulator):
    hung, good = emulator(), emulator()
    hung.control(hang=True)
    settings = make_settings(tmp_path, redis_url, static_backends=static(hung=hung, good=good),
                             tracking={"task_timeout_s": 2.0, "silence_s": 1.0})
    async with running_daemon(settings) as api:
        await wait_for_pool(api, lambda p: sum(b["status"] == "healthy" for b in p["backends"]) == 2)
        task_id = (await api.post("/api/tasks", json={"prompt": basic_graph(color=5)})).json()["id"]
        [task] = await wait_for_tasks(api, [task_id], timeout_s=30)
        assert task["status"] == "completed" and task["backend"] == "static:good" and task["attempts"] == 2
        [attempt] = task["history"]
        assert attempt["backend"] == "static:hung" and attempt["outcome"] == "timed_out"
        assert "task_timeout" in attempt["error"]
        # the hung node ignores /interrupt: the backend stays unhealthy while it holds the prompt
        pool = await wait_for_pool(api, lambda p: backend(p, "static:hung")["status"] == "unhealthy", timeout_s=10)
        assert "timed out" in backend(pool, "static:hung")["error"]


async def test_a_timeout_on_every_backend_fails_the_task_with_its_history(tmp_path: Path, redis_url, emulator):
    a, b = emulator(), emulator()
    for emu in (a, b):
        emu.control(hang=True)
    settings = make_settings(tmp_path, redis_url, static_backends=static(a=a, b=b),
                             tracking={"task_timeout_s": 1.0, "max_retries": 1})
    async with running_daemon(settings) as api:
        await wait_for_pool(api, lambda p: sum(b["status"] == "healthy" for b in p["backends"]) == 2)
        task_id = (await api.post("/api/tasks", json={"prompt": basic_graph(color=6)})).json()["id"]
        [task] = await wait_for_tasks(api, [task_id], timeout_s=30)
    assert task["status"] == "failed" and task["attempts"] == 2
    assert "gave up after 2 attempts" in task["error"]
    assert sorted(x["backend"] for x in task["history"]) == ["static:a", "static:b"]  # each on another backend
    assert {x["outcome"] for x in task["history"]} == {"timed_out"}


async def test_workflow_errors_are_not_retried(tmp_path: Path, redis_url, emulator):
    emu, other = emulator(), emulator()
    for e in (emu, other):
        e.control(fail_node_types=["ImageInvert"])
    settings = make_settings(tmp_path, redis_url, static_backends=static(a=emu, b=other))
    async with running_daemon(settings) as api:
        task_id = (await api.post("/api/tasks", json={"prompt": basic_graph(color=7)})).json()["id"]
        [task] = await wait_for_tasks(api, [task_id])
    assert task["status"] == "failed" and task["attempts"] == 1 and task["history"] == []


async def test_cancel_a_queued_task_and_a_running_one(tmp_path: Path, redis_url, emulator):
    emu = emulator()
    emu.control(step_s=0.1)
    settings = make_settings(tmp_path, redis_url, static_backends=static(a=emu))
    async with running_daemon(settings) as api:
        running = (await api.post("/api/tasks", json={"prompt": text_to_image_graph(seed=1, steps=200)})).json()
        queued = (await api.post("/api/tasks", json={"prompt": basic_graph(color=8)})).json()
        record = await wait_for_status(api, running["id"], "running")
        canceled = await api.delete(f"/api/tasks/{queued['id']}")
        assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
        assert (await api.get("/api/pool")).json()["queue_length"] == 0
        canceled = await api.delete(f"/api/tasks/{running['id']}")
        assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
        # ComfyUI got the interrupt: the prompt ends interrupted there, and the task stays canceled here
        async with httpx.AsyncClient() as plain:
            for _ in range(100):
                history = (await plain.get(f"{emu.url}/history/{record['prompt_id']}")).json()
                if history:
                    break
                await asyncio.sleep(0.1)
        messages = [m[0] for m in history[record["prompt_id"]]["status"]["messages"]]
        assert messages[-1] == "execution_interrupted"
        after = (await api.post("/api/tasks", json={"prompt": basic_graph(color=9)})).json()
        [done] = await wait_for_tasks(api, [after["id"]])
        assert done["status"] == "completed"  # the slot was freed
        assert (await api.get(f"/api/tasks/{running['id']}")).json()["status"] == "canceled"
        assert (await api.get(f"/api/tasks/{queued['id']}")).json()["status"] == "canceled"
        again = await api.delete(f"/api/tasks/{done['id']}")
        assert again.status_code == 409 and "already completed" in again.json()["detail"]
        assert (await api.delete("/api/tasks/nope")).status_code == 404
    async with httpx.AsyncClient() as plain:
        ran = (await plain.get(emu.url + "/history")).json()
    assert record["prompt_id"] in ran and len(ran) == 2  # the queued task never reached the backend


async def test_static_backends_registered_at_run_time_persist_and_drain_before_removal(tmp_path: Path, redis_url,
                                                                                       emulator):
    emu = emulator()
    emu.control(step_s=0.05)
    settings = make_settings(tmp_path, redis_url, static_backends=[])
    async with running_daemon(settings) as api:
        created = await api.post("/api/pool/backends", json={"name": "box", "url": emu.url + "/"})
        assert created.status_code == 201 and created.json()["status"] == "healthy"
        assert (await api.post("/api/pool/backends", json={"name": "box", "url": emu.url})).status_code == 200
        taken = await api.post("/api/pool/backends", json={"name": "box", "url": "http://127.0.0.1:9"})
        assert taken.status_code == 409 and "DELETE it first" in taken.json()["detail"]
        for bad in ({"name": "box"}, {"name": "a b", "url": emu.url}, {"name": "x", "url": "ftp://h"}, []):
            assert (await api.post("/api/pool/backends", json=bad)).status_code == 422, bad
        task_id = (await api.post("/api/tasks", json={"prompt": basic_graph(color=10)})).json()["id"]
        [task] = await wait_for_tasks(api, [task_id])
        assert task["status"] == "completed" and task["backend"] == "static:box"
    async with running_daemon(settings) as api:  # a restart remembers it
        pool = await wait_for_pool(api, lambda p: any(b["id"] == "static:box" and b["status"] == "healthy"
                                                      for b in p["backends"]))
        assert backend(pool, "static:box")["source"] == "api"
        busy = (await api.post("/api/tasks", json={"prompt": text_to_image_graph(seed=2, steps=40)})).json()
        await wait_for_status(api, busy["id"], "running")
        removed = await api.delete("/api/pool/backends/box")
        assert removed.status_code == 202 and removed.json()["mode"] == "draining"
        waiting = (await api.post("/api/tasks", json={"prompt": basic_graph(color=11)})).json()
        [finished] = await wait_for_tasks(api, [busy["id"]])
        assert finished["status"] == "completed"  # draining let the running prompt finish
        await wait_for_pool(api, lambda p: not p["backends"])
        await asyncio.sleep(0.5)
        assert (await api.get(f"/api/tasks/{waiting['id']}")).json()["status"] == "pending"  # no new work went there
        assert (await api.delete("/api/pool/backends/box")).status_code == 404
    async with running_daemon(settings) as api:
        assert (await api.get("/api/pool")).json()["backends"] == []  # and the removal is remembered


async def test_disable_drain_and_enable_steer_work(tmp_path: Path, redis_url, emulator):
    a, b = emulator(), emulator()
    settings = make_settings(tmp_path, redis_url, static_backends=static(a=a, b=b))
    async with running_daemon(settings) as api:
        await wait_for_pool(api, lambda p: sum(x["status"] == "healthy" for x in p["backends"]) == 2)
        assert (await api.post("/api/pool/backends/static:a/disable")).json()["mode"] == "disabled"
        ids = [(await api.post("/api/tasks", json={"prompt": basic_graph(color=20 + i)})).json()["id"]
               for i in range(4)]
        assert {r["backend"] for r in await wait_for_tasks(api, ids)} == {"static:b"}
        assert (await api.post("/api/pool/backends/static:a/enable")).json()["mode"] == "active"
        assert (await api.post("/api/pool/backends/static:b/drain")).json()["mode"] == "draining"
        ids = [(await api.post("/api/tasks", json={"prompt": basic_graph(color=30 + i)})).json()["id"]
               for i in range(4)]
        assert {r["backend"] for r in await wait_for_tasks(api, ids)} == {"static:a"}
        pool = (await api.get("/api/pool")).json()
        assert backend(pool, "static:b")["mode"] == "draining"  # a static backend waits to be enabled again
        recycle = await api.post("/api/pool/backends/static:a/recycle")
        assert recycle.status_code == 409 and "static" in recycle.json()["detail"]
        assert (await api.post("/api/pool/backends/static:a/reboot")).status_code == 404
        assert (await api.post("/api/pool/backends/nope/drain")).status_code == 404
        configured = await api.delete("/api/pool/backends/a")
        assert configured.status_code == 409 and "configuration" in configured.json()["detail"]


async def test_scale_settings_are_validated_and_health_check_runs_now(tmp_path: Path, redis_url, emulator):
    emu = emulator()
    settings = make_settings(tmp_path, redis_url, static_backends=static(a=emu))
    async with running_daemon(settings) as api:
        bad = await api.post("/api/pool/scale", json={"min_containers": 5, "max_containers": 2})
        assert bad.status_code == 422 and "exceeds" in bad.json()["detail"]
        assert (await api.post("/api/pool/scale", json={"target": 9})).status_code == 422
        assert (await api.post("/api/pool/scale", json={"target": -1})).status_code == 422
        assert (await api.post("/api/pool/scale", json={"size": 1})).status_code == 422
        ok = await api.post("/api/pool/scale", json={"max_containers": 3, "target": 2})
        assert ok.status_code == 200 and ok.json()["config"]["overridden"] == {"max_containers": 3, "target": 2}
        cleared = await api.post("/api/pool/scale", json={"target": None})
        assert cleared.json()["config"]["overridden"] == {"max_containers": 3}
        emu.stop()
        for _ in range(3):  # three failed checks in a row (unhealthy_threshold), each run on demand
            checked = (await api.post("/api/pool/health-check")).json()
        assert backend(checked, "static:a")["status"] == "unhealthy"
        assert backend(checked, "static:a")["health_failures"] == 3


def test_sigkill_of_the_scheduler_mid_run_loses_and_repeats_nothing(tmp_path: Path, redis_url, emulator):
    """100 tasks, the daemon killed with SIGKILL a third of the way, started again: every task completes exactly
    once, with one output each, and the backends ran exactly 100 prompts."""
    emulators = [emulator("--node-seconds", "0.05") for _ in range(4)]
    port = free_port()
    config = {"server": {"port": port}, "redis": {"url": redis_url}, "data_dir": str(tmp_path / "data"),
              "static_backends": [{"name": f"e{i}", "url": e.url} for i, e in enumerate(emulators)],
              "pool": {"health_interval_s": 0.5}, "scheduler": {"prefetch": 1}, "tracking": {"silence_s": 2.0}}
    api = f"http://127.0.0.1:{port}"
    first = serve_subprocess(config, tmp_path / "comfyart.yaml")
    try:
        wait_for_port(port, timeout_s=30)
        ids = [httpx.post(f"{api}/api/tasks", json={"prompt": basic_graph(color=i)}).json()["id"]
               for i in range(100)]
        deadline = time.monotonic() + 60
        while httpx.get(f"{api}/api/tasks", params={"status": "completed", "limit": 1}).json()["total"] < 30:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    second = serve_subprocess(config, tmp_path / "comfyart.yaml")
    try:
        wait_for_port(port, timeout_s=30)
        deadline = time.monotonic() + 120
        while True:
            records = [httpx.get(f"{api}/api/tasks/{i}").json() for i in ids]
            if all(r["status"] in ("completed", "failed", "canceled") for r in records):
                break
            assert time.monotonic() < deadline, [r["status"] for r in records]
            time.sleep(0.2)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(60)
    assert [r["status"] for r in records] == ["completed"] * 100
    assert all(len(r["outputs"]) == 1 for r in records)
    stored = [p for p in (tmp_path / "data" / "outputs").rglob("*") if p.is_file()]
    assert len(stored) == 100  # no output downloaded twice
    ran = sum(1 for e in emulators for p in (e.base_dir / "output").rglob("*.png"))
    assert ran == 100  # no prompt ran twice
