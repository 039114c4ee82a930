"""Static backends out of reach (pool.unreachable): a daemon over two emulator processes as static backends, one of
them killed (SIGKILL) or paused (SIGSTOP: a partition, the process still holds its prompts) while it runs and
queues slow prompts. Its prompts finish on the other one within ``static_lost_after_s``, each task completes once,
and a paused one that comes back is rid of the prompts given up on it before it gets new work."""
from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from comfyart.clock import now_ms
from comfyart.comfy.client import ComfyClient
from comfyart.config.fleet import PoolConfig, StaticBackendConfig
from comfyart.config.sections import TrackingConfig
from comfyart.errors import StoreUnavailable
from comfyart.files.outputs import OutputStore
from comfyart.models import BackendState, NewTask, TaskStatus
from comfyart.pool.health import HealthChecks
from comfyart.pool.registry import Pool
from comfyart.pool.unreachable import give_up_silent
from comfyart.store.stores import Stores
from comfyart.tracker.outcomes import Outcomes
from comfyart.tracker.prompts import PromptBook
from tests.support.daemon import make_settings, running_daemon, static_backends, wait_for_pool, wait_for_tasks
from tests.support.graphs import basic_graph
from tests.support.ports import free_port
from tests.support.redis import impatient_client, stop_writes_once_queued

NODE_SECONDS = "1.5"  # three nodes: 4.5 s a prompt
POOL = {"health_interval_s": 0.5, "health_timeout_s": 1.0, "static_lost_after_s": 2.0}
TRACKING = {"silence_s": 1.0, "submit_timeout_s": 2.0, "task_timeout_s": 600.0, "max_retries": 2}
GIVEN_UP = "static:emu0"
JUST_STARTED_MS = 800  # well inside its first node of NODE_SECONDS


def settings_over(tmp_path: Path, redis_url: str, *emulators: Any) -> Any:
    return make_settings(tmp_path, redis_url, static_backends=static_backends(*emulators), pool=POOL,
                         scheduler={"prefetch": 1}, tracking=TRACKING)


async def submit(api: httpx.AsyncClient, count: int, first: int = 0) -> list[str]:
    return [(await api.post("/api/tasks", json={"prompt": basic_graph(color=c)})).json()["id"]
            for c in range(first, first + count)]


async def wait_until_it_runs_and_queues(api: httpx.AsyncClient, ids: list[str]) -> str:
    """Until emu0 holds two prompts (one running, one queued behind it) and the one it runs started less than
    ``JUST_STARTED_MS`` ago: in its first node, two more to go. Returns the prompt it runs."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pool = (await api.get("/api/pool")).json()
        held = next(b["inflight"] for b in pool["backends"] if b["id"] == GIVEN_UP)
        records = [(await api.get(f"/api/tasks/{task_id}")).json() for task_id in ids]
        running = [r for r in records if r["status"] == "running" and r["backend"] == GIVEN_UP]
        if held == 2 and running and now_ms() - running[0]["started_ms"] < JUST_STARTED_MS:
            return str(running[0]["prompt_id"])
        await asyncio.sleep(0.05)
    raise AssertionError("emu0 never held a prompt just started and one queued behind it")


def backend_status(pool: dict[str, Any], backend_id: str) -> str:
    return next(b["status"] for b in pool["backends"] if b["id"] == backend_id)


def assert_completed_once_each(records: list[dict[str, Any]]) -> list[str]:
    """Every task completed, with one output; the prompts given up on emu0 finished on emu1, each after exactly one
    attempt lost. Returns those prompts' ids."""
    given_up = []
    for record in records:
        assert record["status"] == "completed", (record["id"], record.get("error"))
        assert len(record["outputs"]) == 1
        assert record["attempts"] == len(record["history"]) + 1
        for attempt in record["history"]:
            assert (attempt["backend"], attempt["outcome"]) == (GIVEN_UP, "backend_lost"), attempt
            assert "unreachable" in attempt["error"]
            given_up.append(attempt["prompt_id"])
        if record["history"]:
            assert record["backend"] == "static:emu1"
    assert len(given_up) >= 2  # the running one and the one queued behind it
    return given_up


async def test_a_killed_static_backend_loses_its_prompts_and_takes_work_again_once_restarted(
        tmp_path: Path, redis_url, emulator):
    dying, other = emulator("--node-seconds", NODE_SECONDS), emulator("--node-seconds", NODE_SECONDS)
    async with running_daemon(settings_over(tmp_path, redis_url, dying, other)) as api:
        await wait_for_pool(api, lambda pool: all(b["status"] == "healthy" for b in pool["backends"]))
        ids = await submit(api, 6)
        await wait_until_it_runs_and_queues(api, ids)
        dying.process.kill()
        killed_at = time.monotonic()
        # its two prompts move within static_lost_after_s (plus a check or two), not task_timeout_s
        moved = await wait_for_pool(api, lambda pool: next(b for b in pool["backends"] if b["id"] == GIVEN_UP)
                                    ["inflight"] == 0, timeout_s=15)
        assert time.monotonic() - killed_at < 10
        assert backend_status(moved, GIVEN_UP) == "unhealthy"  # still in the pool: it is not comfyart's to remove
        assert_completed_once_each(await wait_for_tasks(api, ids, timeout_s=60))

        emulator("--node-seconds", "0.05", port=dying.port)  # the same backend, restarted (its queue is gone)
        await wait_for_pool(api, lambda pool: backend_status(pool, GIVEN_UP) == "healthy", timeout_s=15)
        more = await submit(api, 4, first=10)
        later = await wait_for_tasks(api, more, timeout_s=60)
        assert all(r["status"] == "completed" for r in later)
        assert any(r["backend"] == GIVEN_UP for r in later)  # it takes work again


async def test_a_paused_static_backend_is_rid_of_its_given_up_prompts_and_their_results_are_ignored(
        tmp_path: Path, redis_url, emulator):
    paused, other = emulator("--node-seconds", NODE_SECONDS), emulator("--node-seconds", NODE_SECONDS)
    async with running_daemon(settings_over(tmp_path, redis_url, paused, other)) as api:
        await wait_for_pool(api, lambda pool: all(b["status"] == "healthy" for b in pool["backends"]))
        ids = await submit(api, 6)
        running = await wait_until_it_runs_and_queues(api, ids)
        os.kill(paused.process.pid, signal.SIGSTOP)
        try:
            records = await wait_for_tasks(api, ids, timeout_s=60)
            given_up = assert_completed_once_each(records)
        finally:
            os.kill(paused.process.pid, signal.SIGCONT)
        assert running in given_up
        # it answers again: the prompts given up on it are deleted from its queue or interrupted before new work
        await wait_for_pool(api, lambda pool: backend_status(pool, GIVEN_UP) == "healthy", timeout_s=20)
        queue = httpx.get(paused.url + "/queue", timeout=10).json()
        assert queue == {"queue_running": [], "queue_pending": []}
        history = httpx.get(paused.url + "/history", timeout=10).json()
        # the one it ran was interrupted (paused in its first node, it was taken back before its last); the ones
        # queued behind it were deleted, never run
        assert [prompt_id for prompt_id in given_up if prompt_id in history] == [running]
        status = history[running]["status"]
        assert status["status_str"] == "error", status
        assert [m[0] for m in status["messages"]][-1] == "execution_interrupted", status
        await asyncio.sleep(2.0)  # whatever it still reports of them changes nothing
        assert [(await api.get(f"/api/tasks/{task_id}")).json() for task_id in ids] == records
        more = await submit(api, 2, first=10)
        later = await wait_for_tasks(api, more, timeout_s=60)
        assert all(r["status"] == "completed" and not r["history"] for r in later)


async def test_an_uncertain_submission_to_a_static_backend_out_of_reach_is_requeued(tmp_path: Path, redis_client,
                                                                                     session):
    """POST /prompt got ``Connection reset`` and /history cannot be asked: the dispatcher keeps the prompt on the
    backend, uncertain. Once the backend has failed ``unhealthy_threshold`` checks in a row and been out of reach
    for ``static_lost_after_s``, it goes back to the queue like the others (fewer failed checks, however long the
    silence, are not enough: a check can be slow); the backend stays, unhealthy, and remembers the prompt to take it
    back."""
    stores = Stores.on(redis_client, "reach")
    task = await stores.tasks.create(NewTask(basic_graph()))
    assert await stores.queue.claim_id(task.id, 30)
    await stores.queue.record_submission(task.id, backend="static:gone", prompt_id="uncertain-1", attempts=1)
    pool = Pool(config=PoolConfig(static_lost_after_s=2.0, health_timeout_s=1.0, health_interval_s=0.5,
                                  unhealthy_threshold=3),
                providers=[], connect=lambda url: ComfyClient(session, url))
    backend = pool.add_static(StaticBackendConfig(name="gone", url=f"http://127.0.0.1:{free_port()}"), "config")
    book = PromptBook(on_change=pool.notify)
    outcomes = Outcomes(store=stores.tasks, queue=stores.queue, book=book,
                        outputs=OutputStore(tmp_path / "outputs"), config=TrackingConfig())
    book.open(backend, "uncertain-1", task.id, basic_graph()).submitted = True  # what the dispatcher leaves
    health = HealthChecks(pool, pool.config)

    await health.probe_all()
    await give_up_silent(pool, outcomes.backend_lost)
    assert (await stores.tasks.get(task.id)).prompt_id == "uncertain-1"  # not silent long enough yet

    backend.answered -= 60.0  # a minute of silence, rather than waited for
    await health.probe_all()
    await give_up_silent(pool, outcomes.backend_lost)
    assert backend.health.failures == 2
    assert (await stores.tasks.get(task.id)).prompt_id == "uncertain-1"  # two failed checks of three: it stays
    assert "uncertain-1" in book and not backend.given_up

    await health.probe_all()  # the third failure in a row: unhealthy by the health policy
    await give_up_silent(pool, outcomes.backend_lost)
    record = await stores.tasks.get(task.id)
    assert record.status is TaskStatus.PENDING and record.prompt_id is None
    assert [(a.prompt_id, a.outcome) for a in record.history] == [("uncertain-1", "backend_lost")]
    assert await stores.queue.waiting() == 1  # back in the queue, for another backend
    assert pool.backends[backend.id] is backend and backend.state is BackendState.UNHEALTHY
    assert backend.given_up == {"uncertain-1"} and not backend.prompts and "uncertain-1" not in book
    await outcomes.aclose()


async def test_a_give_up_cut_short_by_redis_gives_up_only_what_left_the_book(tmp_path: Path, redis_url, session):
    """Redis stops taking writes once the first of two prompts is requeued: the backend gives up that one only (the
    other is still tracked on it, its task still pointing at it, and must not be taken back), and the next round,
    the backend still out of reach, gives up the other."""
    client, admin = impatient_client(redis_url), aioredis.from_url(redis_url, decode_responses=True)
    stores = Stores.on(client, "cut")
    ids = [(await stores.tasks.create(NewTask(basic_graph(color=c)))).id for c in range(2)]
    pool = Pool(config=PoolConfig(static_lost_after_s=2.0, health_timeout_s=1.0, health_interval_s=0.5,
                                  unhealthy_threshold=1),
                providers=[], connect=lambda url: ComfyClient(session, url))
    backend = pool.add_static(StaticBackendConfig(name="gone", url=f"http://127.0.0.1:{free_port()}"), "config")
    book = PromptBook(on_change=pool.notify)
    outcomes = Outcomes(store=stores.tasks, queue=stores.queue, book=book,
                        outputs=OutputStore(tmp_path / "outputs"), config=TrackingConfig())
    for task_id, prompt_id in zip(ids, ("held-0", "held-1"), strict=True):
        assert await stores.queue.claim_id(task_id, 30)
        await stores.queue.record_submission(task_id, backend=backend.id, prompt_id=prompt_id, attempts=1)
        book.open(backend, prompt_id, task_id, basic_graph()).submitted = True
    backend.answered -= 60.0
    await HealthChecks(pool, pool.config).probe_all()  # one failure: unhealthy, at this threshold

    stopping = await stop_writes_once_queued(stores.queue, admin)
    try:
        with pytest.raises(StoreUnavailable):
            await give_up_silent(pool, outcomes.backend_lost)
        await stopping
    finally:
        await admin.execute_command("CLIENT", "UNPAUSE")
    assert backend.given_up == {"held-0"} and set(backend.prompts) == {"held-1"} and "held-1" in book
    assert (await stores.tasks.get(ids[1])).prompt_id == "held-1"
    assert backend.state is BackendState.UNHEALTHY

    await HealthChecks(pool, pool.config).probe_all()  # the next round: still out of reach
    await give_up_silent(pool, outcomes.backend_lost)
    assert backend.given_up == {"held-0", "held-1"} and not backend.prompts and len(book) == 0
    for task_id, prompt_id in zip(ids, ("held-0", "held-1"), strict=True):
        record = await stores.tasks.get(task_id)
        assert record.status is TaskStatus.PENDING and record.prompt_id is None
        assert [(a.prompt_id, a.outcome) for a in record.history] == [(prompt_id, "backend_lost")]
    await outcomes.aclose()
    await client.aclose()
    await admin.aclose()
