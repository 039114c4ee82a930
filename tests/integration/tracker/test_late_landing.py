"""Late landings (issue 24, ``tracker.latecomers``): an old leader recorded a submission, lost its lease before
its POST /prompt, and POSTs it anyway once the new leader has found it vanished and sent the task out again. The new
leader must take the late prompt off the backend, so that the task runs once. Real: a ``comfyart serve`` on a
redis-server, an emulator, and the late POST made to the emulator as the old leader would have made it."""
from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import redis.asyncio as aioredis

from comfyart.models import NewTask
from comfyart.store.stores import Stores
from tests.support.cluster import ReplicaProcess, tasks_of
from tests.support.graphs import text_to_image_graph

SLOW = ("--step-seconds", "0.3")  # 4 steps: over a second a prompt, time for a late one to queue behind it


def successes(emulator_url: str) -> list[str]:
    history = httpx.get(f"{emulator_url}/history", timeout=10).json()
    return sorted(p for p, entry in history.items() if entry["status"]["status_str"] == "success")


def in_queue(emulator_url: str) -> list[str]:
    queue = httpx.get(f"{emulator_url}/queue", timeout=10).json()
    return [str(item[1]) for part in ("queue_running", "queue_pending") for item in queue[part]]


def emulator_idle(emulator_url: str) -> bool:
    return not in_queue(emulator_url)


async def test_a_prompt_posted_after_it_vanished_is_taken_off_and_its_task_runs_once(
        tmp_path: Path, redis_url: str, redis_client: aioredis.Redis, emulator):
    emu = emulator(*SLOW)
    graph = text_to_image_graph(seed=7)
    stores = Stores.on(redis_client, "comfyart", replicated=True)
    task = await stores.tasks.create(NewTask(graph))
    client_id = await stores.pool.client_id()  # the shared client id, as every leader uses it
    late_prompt = str(uuid.uuid4())
    # the old leader's last steps before it paused: claim, record the submission; its POST did not go out yet
    assert await stores.queue.claim_id(task.id, 30)
    await stores.queue.record_submission(task.id, backend="static:emu0", prompt_id=late_prompt, attempts=1)

    replica = ReplicaProcess(tmp_path, redis_url, [emu], "new")
    try:
        replica.start()
        # its recovery finds the prompt in neither /history nor /queue: vanished, the task goes out again
        deadline = time.monotonic() + 30
        while (record := tasks_of(replica, [task.id])[0])["prompt_id"] in (late_prompt, None):
            assert time.monotonic() < deadline, record
            time.sleep(0.05)
        second_prompt = record["prompt_id"]
        deadline = time.monotonic() + 30
        while second_prompt not in in_queue(emu.url):  # the new leader's POST landed
            assert time.monotonic() < deadline
            time.sleep(0.02)
        # another client's prompt, then the old leader's late POST (the same graph, prompt id and client id): the
        # late prompt would run after the other, its graph not cached, and succeed a second time for the task
        other = httpx.post(f"{emu.url}/prompt", json={"prompt": text_to_image_graph(seed=8), "client_id": "other"},
                           timeout=10).json()["prompt_id"]
        answer = httpx.post(f"{emu.url}/prompt", json={"prompt": graph, "client_id": client_id,
                                                       "prompt_id": late_prompt}, timeout=10)
        assert answer.status_code == 200, answer.text
        deadline = time.monotonic() + 30
        while tasks_of(replica, [task.id])[0]["status"] != "completed" or not emulator_idle(emu.url):
            assert time.monotonic() < deadline, tasks_of(replica, [task.id])
            time.sleep(0.1)
        time.sleep(0.5)  # a late prompt not taken off would be running or queued now, or have succeeded
        assert emulator_idle(emu.url)
        assert successes(emu.url) == sorted([second_prompt, other])  # the task ran once: the late prompt did not
        assert tasks_of(replica, [task.id])[0]["prompt_id"] == second_prompt
        log = replica.log()
        assert "late prompt of an earlier leader" in log and late_prompt in log
    finally:
        replica.stop()
