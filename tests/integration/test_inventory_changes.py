"""Inventories that change under a running daemon (issue 21): a model copied onto a backend while tasks wait for
it, a model removed behind comfyart's back (a stale inventory), and tasks only a backend that is down or disabled
could run, against emulator processes and a real Redis."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.support.daemon import make_settings, running_daemon, wait_for_pool, wait_for_tasks
from tests.support.fleet import (
    all_healthy,
    blocked_reason,
    checkpoint_graph,
    copy_model,
    named,
    remove_model,
    start_fleet,
    submit,
)

NEW, NEWER, OLD = "new.safetensors", "newer.safetensors", "old.safetensors"


async def test_tasks_waiting_for_a_model_start_within_the_refresh_interval_once_it_is_copied_on(tmp_path: Path,
                                                                                              redis_url, emulator):
    """emu1 holds the model but is disabled, so the tasks are accepted and wait; the model copied onto emu0 is
    seen at its next inventory refresh (every 2 s), and they run there."""
    fleet = start_fleet(emulator, [[OLD], [NEW]])
    settings = make_settings(tmp_path, redis_url, static_backends=named(fleet), pool={"inventory_refresh_s": 2.0})
    async with running_daemon(settings) as api:
        await all_healthy(api, 2)
        assert (await api.post("/api/pool/backends/static:emu1/disable")).status_code == 200
        ids = [await submit(api, checkpoint_graph(NEW, seed=i)) for i in range(3)]
        assert await blocked_reason(api, ids[0]) == "only static:emu1 (not taking work) could run it"
        await asyncio.sleep(2.5)  # a refresh of emu0 came and went: it still lacks the model
        assert [(await api.get(f"/api/tasks/{i}")).json()["status"] for i in ids] == ["pending"] * 3
        copied_ms = time.time() * 1000
        copy_model(fleet[0], NEW)
        records = await wait_for_tasks(api, ids, timeout_s=15)
    assert [r["status"] for r in records] == ["completed"] * 3
    assert {r["backend"] for r in records} == {"static:emu0"}
    waited_s = (min(r["started_ms"] for r in records) - copied_ms) / 1000
    assert waited_s <= 2.0 + 1.0, waited_s  # the refresh interval, and a health interval's slack


async def test_tasks_waiting_for_a_model_start_at_once_after_an_on_demand_refresh(tmp_path: Path, redis_url,
                                                                                  emulator):
    """As above with no periodic refresh (an hour): the copied model is seen when asked for, one backend
    (POST /api/pool/backends/{id}/refresh) or the whole fleet (POST /api/pool/refresh)."""
    fleet = start_fleet(emulator, [[OLD], [NEW, NEWER]])
    settings = make_settings(tmp_path, redis_url, static_backends=named(fleet), pool={"inventory_refresh_s": 3600})
    async with running_daemon(settings) as api:
        await all_healthy(api, 2)
        assert (await api.post("/api/pool/backends/static:emu1/disable")).status_code == 200
        for model, refresh in [(NEW, "/api/pool/backends/static:emu0/refresh"), (NEWER, "/api/pool/refresh")]:
            ids = [await submit(api, checkpoint_graph(model, seed=i)) for i in range(2)]
            copy_model(fleet[0], model)
            await asyncio.sleep(1.5)  # three health intervals: the model is not seen unless asked for
            assert [(await api.get(f"/api/tasks/{i}")).json()["status"] for i in ids] == ["pending"] * 2
            refreshed_ms = time.time() * 1000
            assert (await api.post(refresh)).status_code == 200
            records = await wait_for_tasks(api, ids, timeout_s=10)
            assert [r["status"] for r in records] == ["completed"] * 2, model
            assert {r["backend"] for r in records} == {"static:emu0"}, model
            assert min(r["started_ms"] for r in records) - refreshed_ms <= 1000, model


async def test_a_backend_that_lost_a_model_rejects_the_task_and_another_runs_it(tmp_path: Path, redis_url, emulator):
    """Both hold OLD; emu0 loses it behind comfyart's back (no refresh for an hour). emu1 is busy with a long task,
    so the OLD task goes to emu0, which rejects it: its inventory is read again and the task goes back to the
    queue, as an attempt, and runs on emu1."""
    fleet = start_fleet(emulator, [[OLD], [OLD, NEW]], (), "--step-seconds", "0.05")
    settings = make_settings(tmp_path, redis_url, static_backends=named(fleet), pool={"inventory_refresh_s": 3600})
    async with running_daemon(settings) as api:
        await all_healthy(api, 2)
        remove_model(fleet[0], OLD)
        blocker = await submit(api, checkpoint_graph(NEW, steps=40))  # 2 s on emu1, the only one with NEW
        await wait_for_pool(api, lambda p: {b["name"]: b["inflight"] for b in p["backends"]}["emu1"] == 1)
        task_id = await submit(api, checkpoint_graph(OLD, seed=2))
        [record, blocked] = await wait_for_tasks(api, [task_id, blocker], timeout_s=20)
    assert record["status"] == blocked["status"] == "completed", record
    assert record["backend"] == "static:emu1" and record["attempts"] == 2
    [attempt] = record["history"]
    assert attempt["backend"] == "static:emu0" and attempt["outcome"] == "stale_inventory"
    assert f"lacks ckpt_name '{OLD}' after all" in attempt["error"], attempt


async def test_a_model_gone_from_its_only_backend_fails_the_task_naming_it(tmp_path: Path, redis_url, emulator):
    fleet = start_fleet(emulator, [[OLD, NEW]])
    settings = make_settings(tmp_path, redis_url, static_backends=named(fleet), pool={"inventory_refresh_s": 3600})
    async with running_daemon(settings) as api:
        await all_healthy(api, 1)
        remove_model(fleet[0], OLD)
        task_id = await submit(api, checkpoint_graph(OLD))  # comfyart still thinks emu0 has it: accepted
        [record] = await wait_for_tasks(api, [task_id], timeout_s=20)
        refused = await api.post("/api/tasks", json={"prompt": checkpoint_graph(OLD, seed=2)})
    assert record["status"] == "failed" and record["history"] == []
    assert record["error"].startswith(f"no backend can run it: no backend has ckpt_name '{OLD}'"), record["error"]
    assert record["node_errors"]["4"]["errors"][0]["type"] == "value_not_in_list"
    # its inventory was read again when it rejected the task: the next one is refused at once
    assert refused.status_code == 422 and OLD in refused.json()["detail"], refused.json()


async def test_a_task_only_a_disabled_backend_could_run_waits_for_it_and_runs_once_enabled(tmp_path: Path,
                                                                                           redis_url, emulator):
    fleet = start_fleet(emulator, [[OLD], [NEW]])
    settings = make_settings(tmp_path, redis_url, static_backends=named(fleet))
    async with running_daemon(settings) as api:
        await all_healthy(api, 2)
        assert (await api.post("/api/pool/backends/static:emu1/disable")).status_code == 200
        task_id = await submit(api, checkpoint_graph(NEW))
        other = await submit(api, checkpoint_graph(OLD))
        assert await blocked_reason(api, task_id) == "only static:emu1 (not taking work) could run it"
        [ran] = await wait_for_tasks(api, [other])  # the waiting task holds up no other
        scheduler = (await api.get("/api/scheduler")).json()
        assert [entry["task"] for entry in scheduler["blocked"]] == [task_id]
        assert (await api.get(f"/api/tasks/{task_id}")).json()["status"] == "pending"
        assert (await api.post("/api/pool/backends/static:emu1/enable")).status_code == 200
        [record] = await wait_for_tasks(api, [task_id], timeout_s=10)
        scheduler = (await api.get("/api/scheduler")).json()
    assert scheduler["blocked"] == []  # it ran: no longer listed, though nothing else is queued
    assert ran["status"] == "completed" and ran["backend"] == "static:emu0"
    assert record["status"] == "completed" and record["backend"] == "static:emu1" and record["history"] == []


async def test_a_task_only_a_down_backend_could_run_waits_for_it_and_runs_once_healthy(tmp_path: Path, redis_url,
                                                                                       emulator):
    fleet = start_fleet(emulator, [[OLD], [NEW]])
    settings = make_settings(tmp_path, redis_url, static_backends=named(fleet))
    async with running_daemon(settings) as api:
        await all_healthy(api, 2)
        port = fleet[1].port
        fleet[1].stop()
        await wait_for_pool(api, lambda p: {b["name"]: b["status"] for b in p["backends"]}["emu1"] == "unhealthy")
        task_id = await submit(api, checkpoint_graph(NEW))  # the fleet knows emu1 has it, though it is down
        assert await blocked_reason(api, task_id) == "only static:emu1 (unhealthy) could run it"
        assert (await api.get(f"/api/tasks/{task_id}")).json()["status"] == "pending"
        emulator(port=port)  # the same port and model folder: emu1 is back
        [record] = await wait_for_tasks(api, [task_id], timeout_s=20)
        scheduler = (await api.get("/api/scheduler")).json()
    assert record["status"] == "completed" and record["backend"] == "static:emu1" and record["history"] == []
    assert scheduler["blocked"] == []


async def test_a_backend_back_from_down_is_read_again_before_it_is_given_work(tmp_path: Path, redis_url, emulator):
    """A ComfyUI restarted with another model (copied on while it was down) is known to have it once healthy, not
    an inventory refresh later (none for an hour here)."""
    fleet = start_fleet(emulator, [[OLD]])
    settings = make_settings(tmp_path, redis_url, static_backends=named(fleet), pool={"inventory_refresh_s": 3600})
    async with running_daemon(settings) as api:
        await all_healthy(api, 1)
        port = fleet[0].port
        fleet[0].stop()
        await wait_for_pool(api, lambda p: p["backends"][0]["status"] == "unhealthy")
        copy_model(fleet[0], NEW)
        emulator(port=port)
        await all_healthy(api, 1)
        answer = await api.post("/api/tasks", json={"prompt": checkpoint_graph(NEW)})
        assert answer.status_code == 201, answer.text
        [record] = await wait_for_tasks(api, [answer.json()["id"]])
    assert record["status"] == "completed" and record["history"] == []
