"""The retention sweep of v2 jobs (sweeps.jobs) on a real redis-server and a real output directory: a finished
job's outputs removed once past its retention, never a running one's (clock and retention injected)."""
from __future__ import annotations

from pathlib import Path

import pytest

from comfyart.files.outputs import OutputStore
from comfyart.models import TaskStatus
from comfyart.store.jobs import JobIndex
from comfyart.store.stores import Stores
from comfyart.store.tasks import TaskStore
from comfyart.sweeps.jobs import RetentionSweep
from tests.integration.store.test_jobs import submit


@pytest.fixture
def store(redis_client) -> TaskStore:
    return Stores.on(redis_client, "test").tasks


async def test_the_sweep_removes_outputs_of_finished_jobs_past_retention_only(store, tmp_path: Path):
    outputs = OutputStore(tmp_path / "outputs")
    jobs = JobIndex(store)
    done, running = await submit(store), await submit(store)
    for task in (done, running):
        (outputs.task_dir(task.id) / "a.png").write_bytes(b"png")
    await store.update(done.id, to=TaskStatus.COMPLETED, finished_ms=done.created_ms + 1000)
    await store.update(running.id, to=TaskStatus.RUNNING)
    clock = [done.created_ms + 1000 + 59_999]
    sweep = RetentionSweep(jobs, outputs, None, retention_s=60, clock=lambda: clock[0])
    assert await sweep.sweep() == 0 and (outputs.root / done.id / "a.png").exists()
    clock[0] += 1
    assert await sweep.sweep() == 1
    assert not (outputs.root / done.id).exists() and (outputs.root / running.id / "a.png").exists()
    expired = await store.get(done.id)
    assert expired.expired_ms == clock[0] and expired.status is TaskStatus.COMPLETED
    assert await store.redis.zrange(jobs.retained, 0, -1) == [running.id]
    clock[0] += 10**9  # a job still running is never expired
    assert await sweep.sweep() == 0 and (outputs.root / running.id / "a.png").exists()


async def test_a_sweep_over_many_due_jobs_expires_them_all(store, tmp_path: Path):
    jobs = JobIndex(store)
    tasks = [await submit(store) for _ in range(5)]
    for task in tasks[:3]:
        await store.cancel(task.id)
    clock = max(t.created_ms for t in tasks) + 10**9
    swept = RetentionSweep(jobs, OutputStore(tmp_path), None, retention_s=60, clock=lambda: clock)
    assert await swept.sweep() == 3
    assert sorted(await store.redis.zrange(jobs.retained, 0, -1)) == sorted(t.id for t in tasks[3:])
