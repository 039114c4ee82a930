"""Takes task ids from the Redis queue and submits each prompt to the least-loaded backend with a free slot.

comfyart mints every prompt id and records it before POST /prompt, so an answer lost on the way is settled by
looking the prompt up in /history and /queue, never by submitting blindly again.
"""
from __future__ import annotations

import asyncio
import uuid

from loguru import logger

from .comfy import protocol
from .errors import BackendUnavailable, InvalidTransition, NotFound, PromptRejected, TransientError
from .models import TaskStatus
from .policy import AfterUncertainSubmit, after_uncertain_submit, choose_backend
from .pool import Backend, Pool, now_ms
from .store import TaskStore
from .tracker import PromptState, Tracker

CLAIM_BLOCK_S = 1.0


class Dispatcher:
    def __init__(self, *, store: TaskStore, pool: Pool, tracker: Tracker, max_inflight: int) -> None:
        self.store = store
        self.pool = pool
        self.tracker = tracker
        self.max_inflight = max_inflight

    def has_free_slot(self) -> bool:
        return choose_backend(self.pool.loads(), self.max_inflight) is not None

    async def run(self) -> None:
        await self.pool.ready.wait()
        async with asyncio.TaskGroup() as submissions:
            while True:
                if not self.has_free_slot():
                    await self.pool.wait_changed(1.0)
                    continue
                try:
                    task_id = await self.store.claim(CLAIM_BLOCK_S)
                    if task_id is not None:
                        await self.dispatch(task_id, submissions)
                except TransientError as exc:
                    logger.warning("dispatch paused error={}", exc)
                    await asyncio.sleep(exc.retry_after_s)

    async def dispatch(self, task_id: str, submissions: asyncio.TaskGroup) -> None:
        """Pick a backend, record the submission, then POST in a task of its own so a slow backend delays
        no other."""
        try:
            task = await self.store.get(task_id)
        except NotFound:
            await self.store.release_claim(task_id)
            return
        if task.status != TaskStatus.PENDING:
            await self.store.release_claim(task_id)  # canceled (or settled) while it waited
            return
        backend_id = choose_backend(self.pool.loads(), self.max_inflight)
        if backend_id is None:
            await self.store.requeue_front(task_id)
            return
        backend = self.pool.backends[backend_id]
        prompt_id = str(uuid.uuid4())
        await self.store.record_submission(task_id, backend=backend.id, prompt_id=prompt_id,
                                           attempts=task.attempts + 1)
        state = self.tracker.expect(backend, prompt_id, task_id, task.prompt)
        submissions.create_task(self._submit(backend, prompt_id, state, task.prompt), name=f"submit {task_id}")

    async def _submit(self, backend: Backend, prompt_id: str, state: PromptState, prompt: dict) -> None:
        try:
            await backend.client.submit(prompt, client_id=self.tracker.client_id, prompt_id=prompt_id)
        except PromptRejected as exc:
            await self._rejected(backend, prompt_id, state, exc)
            return
        except BackendUnavailable as exc:
            await self._uncertain(backend, prompt_id, state, exc)
            return
        state.submitted = True
        logger.debug("submitted task={} backend={} prompt={}", state.task_id, backend.id, prompt_id)

    async def _rejected(self, backend: Backend, prompt_id: str, state: PromptState, exc: PromptRejected) -> None:
        try:
            await self.store.update(state.task_id, to=TaskStatus.FAILED, finished_ms=now_ms(),
                                    error=f"rejected by ComfyUI: {exc}", node_errors=exc.node_errors)
        except (InvalidTransition, NotFound):
            pass
        await self.tracker.release(backend, prompt_id, done=True)
        logger.info("task rejected task={} backend={} error={}", state.task_id, backend.id, exc)

    async def _uncertain(self, backend: Backend, prompt_id: str, state: PromptState, exc: BackendUnavailable) -> None:
        """The answer to POST /prompt was lost: the backend decides, through /history and /queue."""
        try:
            in_history = await backend.client.history(prompt_id) is not None
            in_queue = protocol.prompt_in_queue(await backend.client.queue(), prompt_id)
        except BackendUnavailable:
            # cannot tell yet: keep the slot; reconciliation looks again, and a lost backend requeues it
            state.submitted = True
            logger.warning("submission uncertain task={} backend={} error={}", state.task_id, backend.id, exc)
            return
        if after_uncertain_submit(in_history=in_history, in_queue=in_queue) is AfterUncertainSubmit.TRACK:
            state.submitted = True
            return
        backend.health_failures += 1
        await self.tracker.release(backend, prompt_id, done=False)
        await self.tracker.requeue_task(state.task_id, f"{backend.id} did not take the prompt: {exc}")
