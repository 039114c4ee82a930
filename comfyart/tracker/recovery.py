"""What a leader's term starts with (the daemon's start, or a failover): the claims of an earlier leader back to
the queue, and every task it had in flight either re-attached (its backend is in the pool: the first look at that
backend's /history and /queue settles it, and one it never saw is requeued) or requeued."""
from __future__ import annotations

import time

from loguru import logger

from comfyart.models import TaskStatus, relay_of
from comfyart.policy.attempts import AttemptEnd
from comfyart.pool.registry import Pool
from comfyart.store.queue import TaskQueue
from comfyart.store.tasks import TaskStore
from comfyart.tracker.outcomes import Outcomes
from comfyart.tracker.prompts import PromptBook


async def recover(*, store: TaskStore, queue: TaskQueue, pool: Pool, book: PromptBook, outcomes: Outcomes) -> None:
    """Re-attach tasks whose backend is still in the pool, requeue the others."""
    migrated = await queue.migrate()
    if migrated:
        logger.info("queue migrated to the priority queue tasks={}", migrated)
    requeued = await queue.recover_claimed()
    reattached = 0
    for task in await store.active_tasks():
        backend = pool.backends.get(task.backend or "")
        if backend is not None and task.prompt_id:
            # confirmed or not, the first lookup decides: /history, /queue, or never seen (requeued)
            state = book.open(backend, task.prompt_id, task.id, task.prompt or {}, relay=relay_of(task))
            state.submitted = True
            state.started = task.status is TaskStatus.RUNNING
            if task.submitted_ms:
                state.since -= max(0.0, time.time() - task.submitted_ms / 1000)  # task_timeout keeps counting
            reattached += 1
        else:
            await outcomes.requeue(task.id, AttemptEnd.BACKEND_LOST, "its backend is gone after a restart",
                                   prompt_id=task.prompt_id)
            requeued += 1
    if reattached or requeued:
        logger.info("recovered tasks reattached={} requeued={}", reattached, requeued)
