"""``GET /metrics`` against a running daemon, parsed with prometheus_client's own parser; the gauges an autoscaler
outside comfyart scales by (issue 25) checked against the autoscaler's decisions as ``/api/pool`` shows them."""
from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from comfyart.policy.autoscale import ScaleLimits, wanted_backends
from tests.support.daemon import make_settings, running_daemon, wait_for_tasks
from tests.support.graphs import basic_graph
from tests.support.ports import free_port_range

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
WANTED = ("comfyart_autoscaler_wanted_backends", ())


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


def by_tags(metrics: Samples) -> dict[tuple[str, str], float]:
    return {(dict(labels)["tags"], dict(labels)["state"]): value for (name, labels), value in metrics.items()
            if name == "comfyart_queue_depth_by_tags"}


async def gauges_and_decision(api: httpx.AsyncClient, condition: Callable[[Samples, dict[str, Any]], bool],
                              timeout_s: float = 20.0) -> tuple[Samples, dict[str, Any]]:
    """Scrape, then read the autoscaler's decision, until ``condition`` holds of both and the wanted gauge is the
    decision's count (a decision between the two reads: read both again)."""
    deadline = time.monotonic() + timeout_s
    while True:
        metrics = await scrape(api)
        decision = (await api.get("/api/pool")).json()["autoscaler"] or {}
        if metrics.get(WANTED) == decision.get("desired") and condition(metrics, decision):
            return metrics, decision
        assert time.monotonic() < deadline, (metrics.get(WANTED), decision, by_tags(metrics))
        await asyncio.sleep(0.1)


def policy_count(decision: dict[str, Any], pool: dict[str, Any]) -> int:
    """What ``policy.autoscale.wanted_backends`` wants for the load the decision names, in the pool's limits."""
    load = int(re.match(r"load (\d+) ", decision["reason"]).group(1))  # type: ignore[union-attr]
    limits = ScaleLimits(pool["min_containers"], pool["max_containers"], pool["tasks_per_container"], 0, 0, 0)
    return wanted_backends(load, limits)


async def test_the_scaling_gauges_follow_the_queue_without_a_provider(tmp_path: Path, redis_url, emulator):
    """No Docker or process provider (Kubernetes runs the backends): the wanted count is the policy's for the load
    (one backend per 2 tasks, queued or running, within 0..3), 0 when idle; the depth by tags follows the tasks."""
    pool = {"min_containers": 0, "max_containers": 3, "tasks_per_container": 2, "health_interval_s": 0.5}
    async with running_daemon(make_settings(tmp_path, redis_url, pool=pool)) as api:
        await gauges_and_decision(api, lambda m, d: m[WANTED] == 0)  # no backend, no load: none wanted
        ids = [(await api.post("/api/tasks", json={"prompt": basic_graph(color=c)})).json()["id"] for c in range(3)]
        ids += [(await api.post("/api/tasks", json={"prompt": basic_graph(color=c), "requires": ["sdxl", "gpu"]})
                 ).json()["id"] for c in range(10, 12)]
        metrics, decision = await gauges_and_decision(api, lambda m, d: m[WANTED] == 3)  # 5 tasks: 3 backends
        assert "load 5 (queued 5, running 0)" in decision["reason"] and policy_count(decision, pool) == 3
        assert by_tags(metrics) == {("-", "queued"): 3, ("gpu,sdxl", "queued"): 2}
        await api.post("/api/tasks", json={"prompt": basic_graph(color=20)})  # 6: still 3, and 7 would be max 3
        await gauges_and_decision(api, lambda m, d: "load 6 " in d["reason"] and m[WANTED] == 3)
        assert (await api.post("/api/pool/scale", json={"target": 1})).status_code == 200  # an admin's order
        await gauges_and_decision(api, lambda m, d: m[WANTED] == 1)
        assert (await api.post("/api/pool/scale", json={"target": None})).status_code == 200

        # a backend appears (Kubernetes scaled up): the tasks run, the gauges follow them down to 0
        emu = emulator("--node-seconds", "0.3")
        await api.post("/api/pool/backends", json={"name": "pod-0", "url": emu.url, "tags": ["gpu", "sdxl"]})
        metrics, decision = await gauges_and_decision(
            api, lambda m, d: any(state == "running" for _, state in by_tags(m)))
        assert policy_count(decision, pool) == decision["desired"]
        seen = await gauges_and_decision(api, lambda m, d: "load 6" not in d["reason"] and d["desired"] < 3)
        assert policy_count(seen[1], pool) == seen[1]["desired"]
        assert all(r["status"] == "completed" for r in await wait_for_tasks(api, ids))
        metrics, decision = await gauges_and_decision(api, lambda m, d: m[WANTED] == 0, timeout_s=30)
        assert by_tags(metrics) == {} and metrics[("comfyart_queue_depth_by_tags_unscanned", ())] == 0


async def test_with_a_provider_the_wanted_gauge_is_its_containers(tmp_path: Path, redis_url):
    command = ["{python}", "-m", "comfyart.emulator", "--host", "{address}", "--port", "{port}"]
    settings = make_settings(tmp_path, redis_url,
                             processes={"command": command, "address": "127.0.0.1", "ports": list(free_port_range(2)),
                                        "gpus": [0], "startup_timeout": 20},
                             pool={"min_containers": 0, "max_containers": 1})
    async with running_daemon(settings) as api:
        await gauges_and_decision(api, lambda m, d: m[WANTED] == 0 and "steady" in d["reason"])
        await api.post("/api/tasks", json={"prompt": basic_graph()})
        _, decision = await gauges_and_decision(api, lambda m, d: m[WANTED] == 1)
        assert "per container" in decision["reason"]  # decide_scale's, which starts the container
