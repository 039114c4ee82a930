"""The core pipeline against a real redis-server and emulator processes used as static backends."""
from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import aiohttp
import httpx

from tests.support.daemon import make_settings, running_daemon, static_backends, wait_for_pool, wait_for_tasks
from tests.support.graphs import basic_graph, text_to_image_graph


async def test_task_completes_with_outputs_matching_the_emulators_files(tmp_path: Path, redis_url, emulator):
    emu = emulator()
    settings = make_settings(tmp_path, redis_url, static_backends=static_backends(emu))
    async with running_daemon(settings) as api:
        created = await api.post("/api/tasks", json={"prompt": text_to_image_graph(seed=7)})
        assert created.status_code == 201
        assert created.json()["status"] == "pending"
        task_id = created.json()["id"]
        [task] = await wait_for_tasks(api, [task_id])
        assert task["status"] == "completed", task
        assert task["progress"] == 1.0
        assert task["backend"] == "static:emu0" and task["attempts"] == 1
        assert task["started_ms"] <= task["finished_ms"]
        [output] = task["outputs"]
        written = emu.base_dir / "output" / output["subfolder"] / output["filename"]
        assert output["sha256"] == hashlib.sha256(written.read_bytes()).hexdigest()
        assert output["content_type"] == "image/png" and output["size"] == written.stat().st_size
        served = await api.get(f"/api/tasks/{task_id}/outputs/{output['filename']}")
        assert served.status_code == 200 and served.headers["content-type"] == "image/png"
        assert hashlib.sha256(served.content).hexdigest() == output["sha256"]


async def test_a_fully_cached_rerun_takes_its_outputs_from_history(tmp_path: Path, redis_url, emulator):
    """The second run of one graph is all cached: its outputs are the first run's files, read from /history (the
    socket alone is trusted only for a run it saw whole, with nothing cached)."""
    emu = emulator()
    settings = make_settings(tmp_path, redis_url, static_backends=static_backends(emu))
    graph = text_to_image_graph(seed=11)
    async with running_daemon(settings) as api:
        first_id = (await api.post("/api/tasks", json={"prompt": graph})).json()["id"]
        [first] = await wait_for_tasks(api, [first_id])
        second_id = (await api.post("/api/tasks", json={"prompt": graph})).json()["id"]
        [second] = await wait_for_tasks(api, [second_id])
        async with httpx.AsyncClient() as plain:
            entry = (await plain.get(f"{emu.url}/history/{second['prompt_id']}")).json()[second["prompt_id"]]
    cached = dict(entry["status"]["messages"])["execution_cached"]["nodes"]
    assert sorted(cached) == sorted(graph)  # every node of the rerun came from the cache
    assert first["status"] == second["status"] == "completed", (first, second)
    assert [o["sha256"] for o in second["outputs"]] == [o["sha256"] for o in first["outputs"]]
    assert len(second["outputs"]) == 1 and second["progress"] == 1.0


async def test_a_run_whose_outputs_ran_is_settled_from_the_socket_without_a_lookup(tmp_path: Path, redis_url,
                                                                                  emulator):
    """A second run with another seed has its loader and text encoders cached but its SaveImage runs: the socket saw
    every output's ``executed`` live, so /history is not asked. A fully cached re-run is looked up."""
    emu = emulator()
    settings = make_settings(tmp_path, redis_url, static_backends=static_backends(emu))
    async with running_daemon(settings) as api, httpx.AsyncClient() as plain:
        await wait_for_pool(api, lambda pool: pool["backends"][0]["inventory"]["read"])
        first = (await api.post("/api/tasks", json={"prompt": text_to_image_graph(seed=1)})).json()["id"]
        await wait_for_tasks(api, [first])
        lookups = (await plain.get(f"{emu.url}/emulator/stats")).json()["history_lookups"]
        second = (await api.post("/api/tasks", json={"prompt": text_to_image_graph(seed=2)})).json()["id"]
        [record] = await wait_for_tasks(api, [second])
        entry = (await plain.get(f"{emu.url}/history/{record['prompt_id']}")).json()[record["prompt_id"]]
        assert (await plain.get(f"{emu.url}/emulator/stats")).json()["history_lookups"] == lookups + 1  # ours
        rerun = (await api.post("/api/tasks", json={"prompt": text_to_image_graph(seed=2)})).json()["id"]
        [again] = await wait_for_tasks(api, [rerun])
        assert (await plain.get(f"{emu.url}/emulator/stats")).json()["history_lookups"] > lookups + 1
    assert "4" in dict(entry["status"]["messages"])["execution_cached"]["nodes"]  # the loader came from cache
    assert record["status"] == again["status"] == "completed" and len(record["outputs"]) == 1
    assert again["outputs"][0]["sha256"] == record["outputs"][0]["sha256"]


async def test_progress_is_written_while_a_prompt_runs(tmp_path: Path, redis_url, emulator):
    emu = emulator("--step-seconds", "0.1")
    settings = make_settings(tmp_path, redis_url, static_backends=static_backends(emu))
    async with running_daemon(settings) as api:
        task_id = (await api.post("/api/tasks", json={"prompt": text_to_image_graph(steps=20)})).json()["id"]
        seen = set()
        for _ in range(100):
            record = (await api.get(f"/api/tasks/{task_id}")).json()
            if record["status"] == "running" and record["node"] == "3" and record["node_step"]:
                seen.add((record["node_step"], record["node_max"], record["progress"]))
            if record["status"] == "completed":
                break
            await asyncio.sleep(0.05)
        assert len(seen) >= 3, seen  # several distinct sampler steps were observed
        assert all(maximum == 20 and 0 < progress < 1 for _, maximum, progress in seen)
        assert sorted(p for _, _, p in seen) == [p for _, _, p in sorted(seen)]  # progress grows with the step


async def test_validation_failure_records_node_errors(tmp_path: Path, redis_url, emulator):
    emu = emulator()
    settings = make_settings(tmp_path, redis_url, static_backends=static_backends(emu))
    # a file in a subfolder of the backend's input folder: comfyart's lists cannot hold it, so only the backend
    # checks it (a graph the pool's /object_info refuses is refused at submission: tests/integration/api/test_admission)
    graph = {"1": {"class_type": "LoadImage", "inputs": {"image": "sub/missing.png"}},
             "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}
    async with running_daemon(settings) as api:
        task_id = (await api.post("/api/tasks", json={"prompt": graph})).json()["id"]
        [task] = await wait_for_tasks(api, [task_id])
        assert task["status"] == "failed"
        assert "Prompt outputs failed validation" in task["error"]
        assert task["node_errors"]["1"]["errors"][0]["type"] == "custom_validation_failed"


async def test_node_exception_fails_the_task_with_comfyuis_message(tmp_path: Path, redis_url, emulator):
    emu = emulator("--fail-node-types", "ImageInvert")
    settings = make_settings(tmp_path, redis_url, static_backends=static_backends(emu))
    async with running_daemon(settings) as api:
        task_id = (await api.post("/api/tasks", json={"prompt": basic_graph()})).json()["id"]
        [task] = await wait_for_tasks(api, [task_id])
        assert task["status"] == "failed"
        assert "node 2 (ImageInvert)" in task["error"] and "emulated failure" in task["error"]
        assert task["outputs"] == []


async def test_tasks_wait_in_redis_while_every_backend_is_full(tmp_path: Path, redis_url, emulator):
    emu = emulator("--node-seconds", "0.5")  # 1.5 s a task: the queue holds the rest for seconds
    settings = make_settings(tmp_path, redis_url, static_backends=static_backends(emu))
    async with running_daemon(settings) as api:
        ids = [(await api.post("/api/tasks", json={"prompt": basic_graph(color=i)})).json()["id"] for i in range(4)]
        pool = await wait_for_pool(api, lambda p: p["backends"][0]["inflight"] == 1)
        assert pool["queue_length"] >= 2
        most_inflight = 0
        while (await api.get("/api/tasks", params={"status": "completed"})).json()["total"] < 4:
            most_inflight = max(most_inflight, (await api.get("/api/pool")).json()["backends"][0]["inflight"])
            await asyncio.sleep(0.05)
        assert most_inflight == 1  # prefetch: 0, never more
        records = await wait_for_tasks(api, ids)
        assert [r["status"] for r in records] == ["completed"] * 4
        assert (await api.get("/api/pool")).json()["backends"][0]["tasks_done"] == 4


async def test_least_loaded_backend_gets_the_prompt(tmp_path: Path, redis_url, emulator):
    slow, fast = emulator("--node-seconds", "0.5"), emulator("--node-seconds", "0.5")
    settings = make_settings(tmp_path, redis_url, static_backends=static_backends(slow, fast))
    async with running_daemon(settings) as api:
        ids = [(await api.post("/api/tasks", json={"prompt": basic_graph(color=i)})).json()["id"] for i in range(2)]
        records = await wait_for_tasks(api, ids)
        assert {r["backend"] for r in records} == {"static:emu0", "static:emu1"}


async def test_a_dropped_websocket_still_yields_a_completed_task(tmp_path: Path, redis_url, emulator):
    emu = emulator("--node-seconds", "0.3")
    settings = make_settings(tmp_path, redis_url, static_backends=static_backends(emu))
    async with running_daemon(settings) as api:
        await asyncio.sleep(0.5)  # let the tracker connect first
        emu.control(drop_ws_after_start=True)
        task_id = (await api.post("/api/tasks", json={"prompt": basic_graph(color=99)})).json()["id"]
        [task] = await wait_for_tasks(api, [task_id], timeout_s=20)
        assert task["status"] == "completed" and len(task["outputs"]) == 1
        assert emu.control()["drop_ws_after_start"] is False  # the drop really happened


async def test_a_socket_taken_over_by_another_client_is_covered_by_the_watchdog(tmp_path: Path, redis_url, emulator):
    """A second socket with our clientId silently takes over: our socket hears nothing more."""
    emu = emulator("--node-seconds", "0.2")
    settings = make_settings(tmp_path, redis_url, static_backends=static_backends(emu), tracking={"silence_s": 1.0})
    async with running_daemon(settings) as api:
        async with aiohttp.ClientSession() as session:
            client_id = await _tracker_client_id(api, emu)
            async with session.ws_connect(f"ws://127.0.0.1:{emu.port}/ws?clientId={client_id}"):
                task_id = (await api.post("/api/tasks", json={"prompt": basic_graph(color=5)})).json()["id"]
                [task] = await wait_for_tasks(api, [task_id], timeout_s=20)
        assert task["status"] == "completed" and len(task["outputs"]) == 1


async def _tracker_client_id(api: httpx.AsyncClient, emu) -> str:
    """Submit one prompt and read the client id the daemon used from the backend's history."""
    task_id = (await api.post("/api/tasks", json={"prompt": basic_graph(color=1)})).json()["id"]
    [task] = await wait_for_tasks(api, [task_id])
    async with httpx.AsyncClient() as plain:
        history = (await plain.get(f"{emu.url}/history/{task['prompt_id']}")).json()
    return history[task["prompt_id"]]["prompt"][3]["client_id"]


async def test_queued_tasks_survive_a_restart_and_run_afterwards(tmp_path: Path, redis_url, emulator):
    settings = make_settings(tmp_path, redis_url, static_backends=[])
    async with running_daemon(settings) as api:  # no backend: tasks wait
        ids = [(await api.post("/api/tasks", json={"prompt": basic_graph(color=i)})).json()["id"] for i in range(3)]
        assert (await api.get("/api/pool")).json()["queue_length"] == 3
    emu = emulator()
    settings = make_settings(tmp_path, redis_url, static_backends=static_backends(emu))
    async with running_daemon(settings) as api:
        records = await wait_for_tasks(api, ids)
        assert [r["status"] for r in records] == ["completed"] * 3
        assert all(r["attempts"] == 1 for r in records)


async def test_a_lost_answer_to_post_prompt_is_settled_by_lookup_not_by_resubmitting(tmp_path: Path, redis_url,
                                                                                       emulator):
    emu = emulator("--node-seconds", "0.2")
    emu.control(drop_prompt_answers=1)
    settings = make_settings(tmp_path, redis_url, static_backends=static_backends(emu))
    async with running_daemon(settings) as api:
        task_id = (await api.post("/api/tasks", json={"prompt": basic_graph(color=77)})).json()["id"]
        [task] = await wait_for_tasks(api, [task_id], timeout_s=30)
    assert emu.control()["drop_prompt_answers"] == 0  # the answer really was lost
    assert task["status"] == "completed" and task["attempts"] == 1
    async with httpx.AsyncClient() as plain:
        history = (await plain.get(emu.url + "/history")).json()
    assert list(history) == [task["prompt_id"]]  # it ran exactly once


async def test_a_prompt_the_backend_never_queued_is_submitted_again(tmp_path: Path, redis_url, emulator):
    emu = emulator()
    emu.control(refuse_prompts=1)
    settings = make_settings(tmp_path, redis_url, static_backends=static_backends(emu))
    async with running_daemon(settings) as api:
        task_id = (await api.post("/api/tasks", json={"prompt": basic_graph(color=78)})).json()["id"]
        [task] = await wait_for_tasks(api, [task_id], timeout_s=30)
    assert task["status"] == "completed" and task["attempts"] == 2
    async with httpx.AsyncClient() as plain:
        history = (await plain.get(emu.url + "/history")).json()
    assert list(history) == [task["prompt_id"]]


async def test_a_backend_that_keeps_refusing_fails_the_task_after_max_attempts(tmp_path: Path, redis_url, emulator):
    emu = emulator()
    emu.control(refuse_prompts=10)
    settings = make_settings(tmp_path, redis_url, static_backends=static_backends(emu), tracking={"max_retries": 1})
    async with running_daemon(settings) as api:
        task_id = (await api.post("/api/tasks", json={"prompt": basic_graph(color=79)})).json()["id"]
        [task] = await wait_for_tasks(api, [task_id], timeout_s=30)
    assert task["status"] == "failed" and task["attempts"] == 2
    assert "gave up after 2 attempts" in task["error"] and "HTTP 500" in task["error"]
    assert [(a["backend"], a["outcome"]) for a in task["history"]] == [("static:emu0", "not_accepted")] * 2
    assert all("HTTP 500" in a["error"] and a["ended_ms"] >= a["submitted_ms"] for a in task["history"])


async def test_after_a_takeover_the_tracker_takes_its_client_id_back(tmp_path: Path, redis_url, emulator):
    """Once another socket took our client id and went away, ours hears nothing: reconnecting fixes it."""
    emu = emulator()
    settings = make_settings(tmp_path, redis_url, static_backends=static_backends(emu), tracking={"silence_s": 3.0})
    async with running_daemon(settings) as api:
        client_id = await _tracker_client_id(api, emu)
        async with aiohttp.ClientSession() as session, \
                session.ws_connect(f"ws://127.0.0.1:{emu.port}/ws?clientId={client_id}"):
            first = (await api.post("/api/tasks", json={"prompt": basic_graph(color=6)})).json()["id"]
            await wait_for_tasks(api, [first], timeout_s=20)
        started = asyncio.get_running_loop().time()
        ids = [(await api.post("/api/tasks", json={"prompt": basic_graph(color=10 + i)})).json()["id"]
               for i in range(6)]
        records = await wait_for_tasks(api, ids, timeout_s=60)
        elapsed = asyncio.get_running_loop().time() - started
    assert [r["status"] for r in records] == ["completed"] * 6
    # a deaf socket costs every prompt silence_s (18 s in all); one reconnect costs it once (about 3 s)
    assert elapsed < 12, f"{elapsed:.1f} s: later prompts waited for the watchdog instead of the socket"
