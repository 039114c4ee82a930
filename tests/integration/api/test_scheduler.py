"""Scheduling through the whole daemon: priorities, required tags, declared VRAM, model affinity, prefetch and
the run-time settings, against emulator processes and a real Redis."""
from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from tests.support.daemon import make_settings, running_daemon, wait_for_pool, wait_for_tasks
from tests.support.graphs import basic_graph, text_to_image_graph

CKPT_A, CKPT_B = "sd_xl_base_1.0.safetensors", "dreamshaper_8.safetensors"


def with_checkpoint(graph: dict, checkpoint: str) -> dict:
    graph["4"]["inputs"]["ckpt_name"] = checkpoint
    return graph


async def healthy(api: httpx.AsyncClient, count: int) -> None:
    await wait_for_pool(api, lambda p: sum(b["status"] == "healthy" for b in p["backends"]) == count)


async def test_priorities_run_high_first_and_fifo_within_a_level(tmp_path: Path, redis_url, emulator):
    emu = emulator("--node-seconds", "0.1")
    settings = make_settings(tmp_path, redis_url, static_backends=[{"name": "e", "url": emu.url}],
                             scheduler={"prefetch": 0, "priority_ageing_s": 0})
    async with running_daemon(settings) as api:
        await healthy(api, 1)
        blocker = (await api.post("/api/tasks", json={"prompt": basic_graph(color=1)})).json()["id"]
        await wait_for_pool(api, lambda p: p["backends"][0]["inflight"] == 1)
        order = [("low", -1), ("normal", 0), ("high", 1), ("normal", 0), (7, 7), ("low", -1)]
        ids = []
        for i, (priority, _) in enumerate(order):
            answer = await api.post("/api/tasks", json={"prompt": basic_graph(color=10 + i), "priority": priority})
            assert answer.status_code == 201
            ids.append(answer.json()["id"])
        records = await wait_for_tasks(api, [blocker, *ids])
    assert all(r["status"] == "completed" for r in records)
    started = sorted(records[1:], key=lambda r: r["started_ms"])
    expected = [ids[4], ids[2], ids[1], ids[3], ids[0], ids[5]]  # 7, high, the normals, the lows, FIFO in each
    assert [r["id"] for r in started] == expected
    assert [r["priority"] for r in started] == [7, 1, 0, 0, -1, -1]


async def test_longest_first_runs_the_costliest_graphs_of_a_level_first(tmp_path: Path, redis_url, emulator):
    emu = emulator("--step-seconds", "0.02")
    settings = make_settings(tmp_path, redis_url, static_backends=[{"name": "e", "url": emu.url}],
                             scheduler={"prefetch": 0, "priority_ageing_s": 0, "order": "longest_first"})
    async with running_daemon(settings) as api:
        await healthy(api, 1)
        blocker = (await api.post("/api/tasks", json={"prompt": text_to_image_graph(seed=1, steps=40)})).json()["id"]
        await wait_for_pool(api, lambda p: p["backends"][0]["inflight"] == 1)
        queued = [(2, "normal"), (10, "normal"), (1, "high"), (5, "normal"), (30, "low")]
        ids = [(await api.post("/api/tasks", json={"prompt": text_to_image_graph(seed=10 + i, steps=steps),
                                                   "priority": priority})).json()["id"]
               for i, (steps, priority) in enumerate(queued)]
        pending = (await api.get("/api/tasks", params={"status": "pending"})).json()
        assert [t["id"] for t in pending["tasks"]] == [ids[2], ids[0], ids[1], ids[3], ids[4]]  # queue order
        assert pending["total"] == 5
        records = await wait_for_tasks(api, [blocker, *ids])
    assert all(r["status"] == "completed" for r in records)
    started = [r["id"] for r in sorted(records[1:], key=lambda r: r["started_ms"])]
    assert started == [ids[2], ids[1], ids[3], ids[0], ids[4]]  # high; then 10, 5, 2 steps; then low


async def test_required_tags_route_tasks_and_an_unrunnable_one_blocks_nothing(tmp_path: Path, redis_url, emulator):
    plain, video = emulator(), emulator()
    settings = make_settings(tmp_path, redis_url, static_backends=[
        {"name": "plain", "url": plain.url}, {"name": "video", "url": video.url, "tags": ["video", "sdxl"]}])
    async with running_daemon(settings) as api:
        await healthy(api, 2)
        flux = (await api.post("/api/tasks", json={"prompt": basic_graph(color=1), "requires": ["flux"]})).json()
        video_ids = [(await api.post("/api/tasks", json={"prompt": basic_graph(color=2 + i),
                                                         "requires": ["video"]})).json()["id"] for i in range(3)]
        any_ids = [(await api.post("/api/tasks", json={"prompt": basic_graph(color=9 + i)})).json()["id"]
                   for i in range(3)]
        records = await wait_for_tasks(api, video_ids + any_ids)
        assert all(r["status"] == "completed" for r in records)
        assert {r["backend"] for r in records[:3]} == {"static:video"}
        scheduler = (await api.get("/api/scheduler")).json()
        for _ in range(30):
            if scheduler["blocked"]:
                break
            await asyncio.sleep(0.2)
            scheduler = (await api.get("/api/scheduler")).json()
        assert scheduler["blocked"] == [{"task": flux["id"], "reason": "2 backend(s) lacks tag(s) flux"}]
        assert (await api.get(f"/api/tasks/{flux['id']}")).json()["status"] == "pending"
        # a backend with the tag registers: the waiting task runs there
        flux_emu = emulator()
        assert (await api.post("/api/pool/backends", json={"name": "flux", "url": flux_emu.url,
                                                           "tags": ["flux"]})).status_code == 201
        [record] = await wait_for_tasks(api, [flux["id"]])
        assert record["status"] == "completed" and record["backend"] == "static:flux"


async def test_declared_vram_skips_backends_that_cannot_fit_it(tmp_path: Path, redis_url, emulator):
    small, big = emulator("--gpu", "0", "--vram-mb", "8192"), emulator("--gpu", "1", "--vram-mb", "81920")
    settings = make_settings(tmp_path, redis_url, static_backends=[{"name": "small", "url": small.url},
                                                                   {"name": "big", "url": big.url}])
    async with running_daemon(settings) as api:
        pool = await wait_for_pool(api, lambda p: all(b["vram_total"] for b in p["backends"])
                                   and all(b["status"] == "healthy" for b in p["backends"]))
        assert {b["name"]: b["vram_total"] >> 20 for b in pool["backends"]} == {"small": 8192, "big": 81920}
        seed = {"target": "3.seed", "type": "int", "default": -1}
        workflow = {"graph": text_to_image_graph(), "params": {"seed": seed}, "vram_mb": 40000}
        assert (await api.put("/api/workflows/big-model", json=workflow)).status_code == 201
        ids = [(await api.post("/api/workflows/big-model/run", json={})).json()["id"] for _ in range(3)]
        ids.append((await api.post("/api/tasks", json={"prompt": basic_graph(), "vram_mb": 20000})).json()["id"])
        records = await wait_for_tasks(api, ids)
    assert [r["status"] for r in records] == ["completed"] * 4
    assert {r["backend"] for r in records} == {"static:big"}


async def test_affinity_keeps_checkpoints_where_they_are_loaded(tmp_path: Path, redis_url, emulator):
    emus = [emulator("--model-load-seconds", "0.2", "--step-seconds", "0.02") for _ in range(2)]
    settings = make_settings(tmp_path, redis_url, static_backends=[{"name": f"e{i}", "url": e.url}
                                                                   for i, e in enumerate(emus)],
                             scheduler={"strategy": "affinity", "prefetch": 1})
    async with running_daemon(settings) as api:
        await healthy(api, 2)
        graphs = [with_checkpoint(text_to_image_graph(seed=i), CKPT_A if i % 2 else CKPT_B) for i in range(16)]
        ids = [(await api.post("/api/tasks", json={"prompt": g})).json()["id"] for g in graphs]
        records = await wait_for_tasks(api, ids)
        scheduler = (await api.get("/api/scheduler")).json()
        pool = (await api.get("/api/pool")).json()
    assert all(r["status"] == "completed" for r in records)
    loads = sum(httpx.get(f"{e.url}/emulator/stats").json()["model_loads"] for e in emus)
    # alternating checkpoints on two backends: least_busy would reload on nearly every task
    assert loads <= 4, loads
    assert scheduler["strategy"] == "affinity" and scheduler["counters"]["same_models"] >= 12
    assert sorted(m for b in pool["backends"] for m in b["models"]) == sorted([CKPT_A, CKPT_B])


async def test_prefetch_keeps_one_prompt_queued_on_a_busy_backend(tmp_path: Path, redis_url, emulator):
    emu = emulator("--node-seconds", "0.2")
    settings = make_settings(tmp_path, redis_url, static_backends=[{"name": "e", "url": emu.url}],
                             scheduler={"prefetch": 1})
    async with running_daemon(settings) as api:
        await healthy(api, 1)
        ids = [(await api.post("/api/tasks", json={"prompt": basic_graph(color=i)})).json()["id"] for i in range(5)]
        most = 0
        backend_queue_seen = 0
        while (await api.get("/api/tasks", params={"status": "completed"})).json()["total"] < 5:
            most = max(most, (await api.get("/api/pool")).json()["backends"][0]["inflight"])
            queue = httpx.get(f"{emu.url}/queue").json()
            backend_queue_seen = max(backend_queue_seen, len(queue["queue_pending"]))
            await asyncio.sleep(0.05)
        records = await wait_for_tasks(api, ids)
    assert [r["status"] for r in records] == ["completed"] * 5
    assert most == 2 and backend_queue_seen == 1  # one running, one waiting in ComfyUI's own queue, never more


async def test_scheduler_settings_change_at_run_time_and_survive_a_restart(tmp_path: Path, redis_url, emulator):
    settings = make_settings(tmp_path, redis_url)
    async with running_daemon(settings) as api:
        initial = (await api.get("/api/scheduler")).json()
        assert initial["strategy"] == "least_busy" and initial["overridden"] == []
        for body, message in [({"strategy": "fastest"}, "strategy: Input should be"),
                              ({"prefetch": -1}, "prefetch: Input should be greater than or equal to 0"),
                              ({"lookahead": 0}, "lookahead"), ({"colour": "red"}, "unknown field(s): colour")]:
            answer = await api.put("/api/scheduler", json=body)
            assert answer.status_code == 422 and message in answer.json()["detail"], (body, answer.json())
        changed = await api.put("/api/scheduler", json={"strategy": "affinity", "prefetch": 2})
        assert changed.status_code == 200
        assert changed.json()["strategy"] == "affinity" and changed.json()["overridden"] == ["prefetch", "strategy"]
    async with running_daemon(settings) as api:
        kept = (await api.get("/api/scheduler")).json()
        assert kept["strategy"] == "affinity" and kept["prefetch"] == 2
        restored = (await api.put("/api/scheduler", json={"prefetch": None})).json()
        assert restored["prefetch"] == 0 and restored["overridden"] == ["strategy"]  # back to the configured 0
