"""The pool route of the REST API (api.pool): static backends listed with their figures."""
from __future__ import annotations

from pathlib import Path

from tests.support.daemon import make_settings, running_daemon, wait_for_tasks
from tests.support.graphs import basic_graph


async def test_pool_lists_static_backends_with_their_figures(tmp_path: Path, redis_url, emulator):
    emu = emulator()
    settings = make_settings(tmp_path, redis_url, static_backends=[{"name": "one", "url": emu.url},
                                                                   {"name": "gone", "url": "http://127.0.0.1:9"}])
    async with running_daemon(settings) as api:
        task_id = (await api.post("/api/tasks", json={"prompt": basic_graph()})).json()["id"]
        await wait_for_tasks(api, [task_id])
        pool = (await api.get("/api/pool")).json()
    one, gone = sorted(pool["backends"], key=lambda b: b["name"] != "one")
    assert one["id"] == "static:one" and one["kind"] == "static" and one["status"] == "healthy"
    assert one["tasks_done"] == 1 and one["inflight"] == 0 and one["vram_free"] > 0
    assert one["last_health_check_ms"] > 0
    assert gone["status"] == "unhealthy" and "system_stats" in gone["error"]
