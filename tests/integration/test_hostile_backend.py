"""A backend that answers garbage (emulator ``garbage`` modes) costs at most the attempts it runs, never the
daemon: against a real redis-server and emulator processes."""
from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support.daemon import make_settings, running_daemon, wait_for_tasks
from tests.support.graphs import basic_graph

TRACKING = {"silence_s": 1.0, "download_timeout_s": 3.0, "submit_timeout_s": 3.0, "task_timeout_s": 20.0,
            "max_retries": 2}


def prompts_run(emu) -> int:
    return httpx.get(emu.url + "/emulator/stats", timeout=10).json()["prompts_run"]


async def still_serving(api: httpx.AsyncClient) -> None:
    health = await api.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    pool = (await api.get("/api/pool")).json()
    assert {b["name"] for b in pool["backends"]} >= {"bad"}


@pytest.mark.parametrize("garbage", [["ws_junk"], ["huge_frame"]])
async def test_junk_on_the_socket_is_ignored_and_prompts_still_complete(tmp_path: Path, redis_url, emulator,
                                                                        garbage):
    bad = emulator("--node-seconds", "0.05", "--behaviour", f'{{"garbage": {garbage!r}}}'.replace("'", '"'))
    settings = make_settings(tmp_path, redis_url, static_backends=[{"name": "bad", "url": bad.url}],
                             tracking=TRACKING)
    async with running_daemon(settings) as api:
        ids = [(await api.post("/api/tasks", json={"prompt": basic_graph(color=c)})).json()["id"] for c in range(3)]
        records = await wait_for_tasks(api, ids, timeout_s=60)
        assert [r["status"] for r in records] == ["completed"] * 3, [r.get("error") for r in records]
        assert all(len(r["outputs"]) == 1 and r["outputs"][0]["size"] > 0 for r in records)
        assert prompts_run(bad) >= 3
        await still_serving(api)


@pytest.mark.parametrize("garbage", [["prompt_answer"], ["history"], ["deep_json"], ["view_hangs"],
                                     ["prompt_answer", "history", "ws_junk"]])
async def test_a_backend_answering_garbage_costs_only_its_attempts(tmp_path: Path, redis_url, emulator, garbage):
    bad = emulator("--node-seconds", "0.05", "--behaviour", f'{{"garbage": {garbage!r}}}'.replace("'", '"'))
    good = emulator("--node-seconds", "0.05")
    settings = make_settings(tmp_path, redis_url, static_backends=[{"name": "bad", "url": bad.url},
                                                                   {"name": "good", "url": good.url}],
                             tracking=TRACKING)
    async with running_daemon(settings) as api:
        ids = [(await api.post("/api/tasks", json={"prompt": basic_graph(color=c)})).json()["id"] for c in range(4)]
        records = await wait_for_tasks(api, ids, timeout_s=90)
        for record in records:
            assert record["status"] in ("completed", "failed"), record
            if record["status"] == "failed":  # said in a sentence, never a stack trace
                assert record["error"] and "Traceback" not in record["error"]
        # whatever the bad one cost, the good one still took work and finished it
        assert any(r["status"] == "completed" and r["backend"] == "static:good" for r in records)
        assert prompts_run(bad) + prompts_run(good) >= 4
        await still_serving(api)
        after = (await api.post("/api/tasks", json={"prompt": basic_graph(color=99)})).json()["id"]
        assert (await wait_for_tasks(api, [after], timeout_s=60))[0]["status"] in ("completed", "failed")
