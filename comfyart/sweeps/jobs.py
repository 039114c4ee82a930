"""The retention sweep of Comfy API v2 jobs, a loop the daemon owns: a v2 job that ended
``api_v2.job_retention_s`` ago (``policy.retention``) loses its output files (the output store's directory of the
task, and its objects when outputs live in object storage), then its record is marked ``expired_ms``: it answers
``expired`` from then on. Files go first: a crash between the two removes them again at the next sweep, never
leaves an expired job whose bytes remain. Jobs queued through other APIs are not v2's to expire."""
from __future__ import annotations

import asyncio
from collections.abc import Callable

from loguru import logger

from comfyart.clock import now_ms
from comfyart.errors import TransientError
from comfyart.files.objects import S3Outputs
from comfyart.files.outputs import OutputStore
from comfyart.models import Task
from comfyart.policy.retention import is_expired, oldest_created_to_check
from comfyart.store.jobs import JobIndex

SWEEP_INTERVAL_S = 60.0
SWEEP_BATCH = 500  # candidates read at a time


class RetentionSweep:
    """``run``: sweep every ``interval_s`` until cancelled. ``clock`` and ``retention_s`` come in, so a test can
    run a sweep at any time with any retention."""

    def __init__(self, jobs: JobIndex, outputs: OutputStore, objects: S3Outputs | None, *, retention_s: int,
                 interval_s: float = SWEEP_INTERVAL_S, clock: Callable[[], int] = now_ms) -> None:
        self.jobs, self.outputs, self.objects = jobs, outputs, objects
        self.retention_s, self.interval_s, self.clock = retention_s, interval_s, clock

    async def run(self) -> None:
        while True:
            try:
                expired = await self.sweep()
            except TransientError as exc:  # Redis or object storage away: the next sweep tries again
                logger.warning("v2 retention sweep postponed error={}", exc)
            else:
                if expired:
                    logger.info("v2 jobs expired count={}", expired)
            await asyncio.sleep(self.interval_s)

    async def sweep(self) -> int:
        """Expire every v2 job due now; returns how many. Reads only jobs created a retention ago or earlier."""
        now = self.clock()
        created_before = oldest_created_to_check(now, self.retention_s)
        expired, kept = 0, 0  # kept: candidates not due yet, which stay at the head of the set
        while True:
            batch = await self.jobs.due_candidates(created_before, kept, SWEEP_BATCH)
            if not batch:
                return expired
            for task in batch:
                if is_expired(task, now_ms=now, retention_s=self.retention_s):
                    await self.expire(task, now)
                    expired += 1
                else:
                    kept += 1

    async def expire(self, task: Task, now: int) -> None:
        keys = [stored.path for stored in task.outputs if stored.bucket is not None]
        if keys and self.objects is not None:
            await self.objects.delete(keys)
        await asyncio.to_thread(self.outputs.remove_task, task.id)
        await self.jobs.mark_expired(task.id, now)
