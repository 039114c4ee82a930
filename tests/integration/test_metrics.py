"""``GET /metrics`` against a running daemon, parsed with prometheus_client's own parser."""
from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.daemon import make_settings, running_daemon, wait_for_tasks
from tests.support.graphs import basic_graph


async def scrape(api: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = await api.get("/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(answer.text) for sample in family.samples}


async def test_metrics_follow_tasks_backends_and_the_queue(tmp_path: Path, redis_url, emulator):
    emu = emulator("--node-seconds", "0.05", "--fail-node-types", "ImageScale")
    settings = make_settings(tmp_path, redis_url, static_backends=[{"name": "emu", "url": emu.url}])
    async with running_daemon(settings) as api:
        ok = [(await api.post("/api/tasks", json={"prompt": basic_graph(color=c)})).json()["id"] for c in range(2)]
        bad = basic_graph(color=9)
        bad["9"] = {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "nearest-exact",
                                                          "width": 8, "height": 8, "crop": "disabled"}}
        bad["2"]["inputs"]["images"] = ["9", 0]
        failed = (await api.post("/api/tasks", json={"prompt": bad})).json()["id"]
        records = await wait_for_tasks(api, [*ok, failed])
        assert [r["status"] for r in records] == ["completed", "completed", "failed"]
        await asyncio.sleep(0.2)  # the metrics follow the events a moment behind
        metrics = await scrape(api)
        assert metrics[("comfyart_tasks", (("status", "completed"),))] == 2
        assert metrics[("comfyart_tasks", (("status", "failed"),))] == 1
        assert metrics[("comfyart_tasks_finished_total", (("status", "completed"),))] == 2
        assert metrics[("comfyart_tasks_finished_total", (("status", "failed"),))] == 1
        assert metrics[("comfyart_task_wait_seconds_count", ())] == 3
        assert metrics[("comfyart_task_run_seconds_count", ())] == 2
        assert 0 < metrics[("comfyart_task_run_seconds_sum", ())] < 30
        backend = next(labels for (name, labels) in metrics if name == "comfyart_backend_up")
        assert dict(backend)["backend"] == "static:emu" and dict(backend)["kind"] == "static"
        assert metrics[("comfyart_backend_up", backend)] == 1
        assert metrics[("comfyart_backend_tasks_done_total", backend)] == 3
        assert metrics[("comfyart_backend_vram_total_bytes", backend)] > 0
        assert metrics[("comfyart_backends", (("mode", "active"), ("status", "healthy")))] == 1
        assert metrics[("comfyart_dispatch_events_total", (("event", "dispatched"),))] == 3
        assert metrics[("comfyart_inventories_events_total", (("event", "read"),))] >= 1  # when it became healthy
        assert metrics[("comfyart_inventories_events_total", (("event", "parsed"),))] == 1
        assert all(metrics[("comfyart_queue_depth", (("state", s),))] == 0 for s in ("queued", "submitted", "running"))


async def test_the_queue_by_priority(tmp_path: Path, redis_url):
    async with running_daemon(make_settings(tmp_path, redis_url)) as api:  # no backend: all stay queued
        for priority, count in (("high", 2), ("normal", 3), ("low", 1), (7, 1)):
            for i in range(count):
                await api.post("/api/tasks", json={"prompt": basic_graph(color=i), "priority": priority})
        metrics = await scrape(api)
        by_priority = {dict(labels)["priority"]: value for (name, labels), value in metrics.items()
                       if name == "comfyart_queued_by_priority"}
        assert by_priority == {"1": 2, "0": 3, "-1": 1, "7": 1, "beyond_scan": 0}
        assert metrics[("comfyart_queue_depth", (("state", "queued"),))] == 7
        assert metrics[("comfyart_tasks", (("status", "pending"),))] == 7
