"""Cancels from any replica (issue 24): a user's cancel on a replica that does not lead is a user write in Redis;
the leader's tracker hears of it through the event bridge and stops the prompt on its backend. Two real ``comfyart
serve`` processes on one redis-server, one slow emulator; what ran is read from the emulator's own /history."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.cluster import ReplicaProcess, leader_and_standby, tasks_of
from tests.support.graphs import text_to_image_graph
from tests.support.v2 import wait_for_job

SLOW = ("--step-seconds", "2")  # 4 steps: some 8 s a prompt, unless it is stopped



def history_entry(emulator_url: str, prompt_id: str, timeout_s: float = 6.0) -> dict[str, Any]:
    """The prompt's entry in the emulator's /history once it ended there; it must end well before it would have
    finished on its own."""
    deadline = time.monotonic() + timeout_s
    while True:
        entry = httpx.get(f"{emulator_url}/history/{prompt_id}", timeout=10).json()
        if entry:
            return dict(entry[prompt_id])
        assert time.monotonic() < deadline, f"prompt {prompt_id} still runs on its backend {timeout_s} s after"
        time.sleep(0.05)


def wait_running(replica: ReplicaProcess, task_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while (record := tasks_of(replica, [task_id])[0])["status"] != "running":
        assert time.monotonic() < deadline, record
        time.sleep(0.05)
    return record


def test_a_rest_cancel_on_the_standby_stops_the_prompt_on_its_backend(tmp_path: Path, redis_url: str, emulator):
    emu = emulator(*SLOW)
    with leader_and_standby(tmp_path, redis_url, [emu]) as (_, standby):
        task_id = standby.submit(1)[0]
        record = wait_running(standby, task_id)
        with standby.http("alice") as alice:
            answer = alice.delete(f"/api/tasks/{task_id}")
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "canceled"
        entry = history_entry(emu.url, record["prompt_id"])
        assert entry["status"]["status_str"] == "error"  # interrupted, not run out
        assert "execution_interrupted" in [m[0] for m in entry["status"]["messages"]]
        assert tasks_of(standby, [task_id])[0]["status"] == "canceled"


def test_a_v2_cancel_on_the_standby_is_canceling_until_the_backend_stopped_it(tmp_path: Path, redis_url: str,
                                                                              emulator):
    emu = emulator(*SLOW)
    with leader_and_standby(tmp_path, redis_url, [emu]) as (_, standby), standby.http("alice") as alice:
        job_id = alice.post("/api/v2/jobs", json={"workflow": text_to_image_graph(seed=3)}).json()["id"]
        wait_for_job(alice, job_id, ("running",), timeout_s=30)
        prompt_id = tasks_of(standby, [job_id])[0]["prompt_id"]
        answer = alice.post(f"/api/v2/jobs/{job_id}/cancel")
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "canceling"  # asked; the backend has not confirmed yet
        entry = history_entry(emu.url, prompt_id)
        assert "execution_interrupted" in [m[0] for m in entry["status"]["messages"]]
        assert wait_for_job(alice, job_id, timeout_s=10)["status"] == "canceled"
