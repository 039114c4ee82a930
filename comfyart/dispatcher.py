"""Takes task ids from the Redis queue and submits each prompt to the least-loaded backend with a free slot.

comfyart mints every prompt id and records it before POST /prompt, so an answer lost on the way is settled by
looking the prompt up in /history and /queue, never by submitting blindly again. A claim holds a lease: a task
whose dispatch broke off half-way (Redis gone for a moment) returns to the queue when the lease ends.
"""
from __future__ import annotations

import asyncio
import time
import uuid

from loguru import logger

from .comfy import protocol
from .errors import BackendUnavailable, InvalidInput, InvalidTransition, NotFound, PromptRejected, TransientError
from .models import TaskStatus
from .policy import AfterUncertainSubmit, AttemptEnd, after_uncertain_submit, choose_backend
from .pool import Backend, Pool, now_ms
from .store import TaskStore
from .templates import PreparedPrompt, Templates
from .tracker import PromptState, Tracker

CLAIM_BLOCK_S = 1.0


class Dispatcher:
    def __init__(self, *, store: TaskStore, pool: Pool, tracker: Tracker, templates: Templates,
                 max_inflight: int, claim_lease_s: float = 30.0) -> None:
        self.store = store
        self.pool = pool
        self.tracker = tracker
        self.templates = templates
        self.max_inflight = max_inflight
        self.claim_lease_s = claim_lease_s

    def has_free_slot(self) -> bool:
        return choose_backend(self.pool.loads(), self.max_inflight) is not None

    async def run(self) -> None:
        await self.pool.ready.wait()
        next_lease_check = 0.0
        async with asyncio.TaskGroup() as submissions:
            while True:
                try:
                    if time.monotonic() >= next_lease_check:
                        next_lease_check = time.monotonic() + self.claim_lease_s / 4
                        for task_id in await self.store.return_expired_claims():
                            logger.warning("claim expired, task back in the queue task={}", task_id)
                    if not self.has_free_slot():
                        await self.pool.wait_changed(1.0)
                        continue
                    task_id = await self.store.claim(CLAIM_BLOCK_S, self.claim_lease_s)
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
        try:
            prepared = await self.templates.prepare(task)
        except InvalidInput as exc:
            await self._unrunnable(task_id, str(exc))
            return
        failed_on = frozenset(attempt.backend for attempt in task.history)
        backend_id = choose_backend(self.pool.loads(), self.max_inflight, avoid=failed_on)
        if backend_id is None:
            await self.store.requeue_front(task_id)
            return
        backend = self.pool.backends[backend_id]
        prompt_id = str(uuid.uuid4())
        try:
            await self.store.record_submission(task_id, backend=backend.id, prompt_id=prompt_id,
                                               attempts=task.attempts + 1,
                                               resolved_prompt=prepared.graph if task.workflow else None)
        except (InvalidTransition, NotFound) as exc:
            logger.info("not submitted task={} reason={}", task_id, exc)  # canceled, or its lease ran out
            return
        state = self.tracker.expect(backend, prompt_id, task_id, prepared.graph)
        submissions.create_task(self._submit(backend, prompt_id, state, prepared), name=f"submit {task_id}")

    async def _unrunnable(self, task_id: str, error: str) -> None:
        try:
            await self.store.update(task_id, to=TaskStatus.FAILED, finished_ms=now_ms(), error=error)
        except (InvalidTransition, NotFound):
            pass
        await self.store.release_claim(task_id)
        logger.info("task cannot run task={} error={}", task_id, error)

    async def _submit(self, backend: Backend, prompt_id: str, state: PromptState, prepared: PreparedPrompt) -> None:
        try:
            await self._upload(backend, prepared)
        except BackendUnavailable as exc:
            # nothing was posted yet: the prompt certainly is not on this backend
            await self.tracker.release(backend, prompt_id, done=False)
            await self.tracker.requeue_task(state.task_id, AttemptEnd.NOT_ACCEPTED,
                                            f"could not upload an input to {backend.id}: {exc}", prompt_id=prompt_id)
            return
        except InvalidInput as exc:
            await self.tracker.release(backend, prompt_id, done=False)
            await self._unrunnable(state.task_id, str(exc))
            return
        if self.tracker.prompts.get(prompt_id) is not state:
            return  # canceled while its inputs were uploading
        try:
            await backend.client.submit(prepared.graph, client_id=self.tracker.client_id, prompt_id=prompt_id)
        except PromptRejected as exc:
            await self._rejected(backend, prompt_id, state, exc)
            return
        except BackendUnavailable as exc:
            await self._uncertain(backend, prompt_id, state, exc)
            return
        state.submitted = True
        if self.tracker.prompts.get(prompt_id) is not state:
            await self.tracker.stop_on_backend(backend, prompt_id)  # canceled while POST /prompt was on its way
            return
        logger.debug("submitted task={} backend={} prompt={}", state.task_id, backend.id, prompt_id)

    async def _upload(self, backend: Backend, prepared: PreparedPrompt) -> None:
        """Put each input image on the backend just before the prompt, so any backend can run any task."""
        for upload in prepared.uploads:
            try:
                data = await asyncio.to_thread(upload.path.read_bytes)
            except OSError as exc:
                raise InvalidInput(f"params.{upload.param}: cannot read {upload.path.name}: {exc.strerror}") from exc
            stored = await backend.client.upload_image(data, name=upload.name, content_type=upload.content_type,
                                                       timeout_s=self.tracker.config.download_timeout_s)
            if stored != upload.name:
                raise BackendUnavailable(f"stored {upload.name} as {stored} despite overwrite")

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
        await self.tracker.release(backend, prompt_id, done=False)
        await self.tracker.requeue_task(state.task_id, AttemptEnd.NOT_ACCEPTED,
                                        f"{backend.id} did not take the prompt: {exc}", prompt_id=prompt_id)
