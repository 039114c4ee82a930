"""How an attempt ends: completed (its outputs downloaded, stored and recorded), failed, or back to the queue for
another try (``policy.attempts.should_retry`` decides) with the attempt in the task's history. Each end frees the
prompt's slot in the in-flight book. Every end is a compare-and-set on the task's prompt id: a result of an attempt
the task has moved on from (requeued meanwhile: its backend was given up for lost) changes nothing."""
from __future__ import annotations

import collections
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loguru import logger

from comfyart.clock import now_ms
from comfyart.comfy import protocol
from comfyart.config.sections import TrackingConfig
from comfyart.errors import BackendUnavailable, InvalidTransition, NotFound
from comfyart.files.filethread import FileThread
from comfyart.files.objects import ObjectStoreUnavailable, S3Outputs
from comfyart.files.outputs import OutputStore
from comfyart.models import Attempt, OutputFile, Task, TaskStatus
from comfyart.policy.attempts import AttemptEnd, should_retry
from comfyart.pool.backend import Backend
from comfyart.store.fence import ensure_leading
from comfyart.store.queue import TaskQueue
from comfyart.store.tasks import TaskStore
from comfyart.tracker.prompts import PromptBook, PromptState

MAX_DOWNLOAD_TRIES = 3


class Outcomes:
    def __init__(self, *, store: TaskStore, queue: TaskQueue, book: PromptBook, outputs: OutputStore,
                 config: TrackingConfig, objects: S3Outputs | None = None,
                 valid: Callable[[], bool] | None = None) -> None:
        self.store = store
        self.valid = valid  # the leadership's: a prompt is stopped on a backend only by the leader of the moment
        self.queue = queue
        self.book = book
        self.outputs = outputs
        self.objects = objects  # outputs go to object storage rather than stay in ``outputs``
        self.config = config
        self.files = FileThread("comfyart outputs")  # every download's file work, off the event loop
        self.counters: collections.Counter[str] = collections.Counter()  # attempt ends and retries, for /metrics

    async def aclose(self) -> None:
        """The files being written are finished first."""
        await self.files.aclose()

    # ------------------------------------------------------------------ results
    async def completed(self, backend: Backend, prompt_id: str, state: PromptState, outputs: dict[str, Any]) -> None:
        if not self.book.holds(prompt_id, state):
            return  # given up while it was looked up (its backend was out of reach): its files are not the task's
        try:
            files = await self._download(backend, state.task_id, outputs)
        except (BackendUnavailable, ObjectStoreUnavailable) as exc:
            state.download_failures += 1
            logger.warning("download failed task={} backend={} error={}", state.task_id, backend.id, exc)
            if state.download_failures < MAX_DOWNLOAD_TRIES:
                return  # the next reconcile tries again
            await self.failed(backend, prompt_id, state, f"could not download outputs: {exc}")
            return
        try:
            comfy: dict[str, Any] = {}
            if state.relay is not None:  # its client's history shows what the backend reported
                comfy.update(comfy_outputs=outputs, comfy_messages=state.messages)
            await self.store.update(state.task_id, to=TaskStatus.COMPLETED, expect=("prompt_id", prompt_id),
                                    finished_ms=now_ms(), progress=1.0,
                                    outputs=[f.model_dump(exclude_none=True) for f in files], node=None,
                                    node_step=None, node_max=None, **comfy)
            logger.info("task completed task={} backend={} prompt={} outputs={}", state.task_id, backend.id,
                        prompt_id, len(files))
        except (InvalidTransition, NotFound):
            pass
        self.book.close(backend, prompt_id, done=True)

    async def _download(self, backend: Backend, task_id: str, outputs: dict[str, Any]) -> list[OutputFile]:
        files = []
        for ref in protocol.output_refs(outputs):
            path, size, sha256, content_type = await backend.client.download(
                ref, functools.partial(self._place, task_id, ref), timeout_s=self.config.download_timeout_s,
                offload=self.files.run)
            destination = Path(path)
            stored = OutputFile(node_id=ref.node_id, filename=destination.name, subfolder=ref.subfolder,
                                type=ref.type, size=size, content_type=content_type, sha256=sha256,
                                path=self.outputs.relative(destination), replica=self.outputs.holder)
            if self.objects is not None:
                key = self.objects.key(task_id, destination.name)
                url = await self.objects.put(destination, key, content_type)
                await self.files.run(destination.unlink)
                stored = stored.model_copy(update={"path": key, "bucket": self.objects.bucket, "url": url,
                                                   "replica": None})
            files.append(stored)
        return files

    def _place(self, task_id: str, ref: protocol.OutputRef) -> str:
        """Where an output goes (runs in the file thread: it may create the task's directory)."""
        return str(self.outputs.destination(task_id, ref.filename, ref.node_id))

    async def failed(self, backend: Backend, prompt_id: str, state: PromptState, error: str, *,
                     to: TaskStatus = TaskStatus.FAILED) -> None:
        try:
            comfy: dict[str, Any] = {}
            if state.relay is not None:  # ComfyUI keeps what a failed prompt showed before it failed
                comfy.update(comfy_messages=state.messages, comfy_outputs=state.outputs)
            await self.store.update(state.task_id, to=to, expect=("prompt_id", prompt_id), finished_ms=now_ms(),
                                    error=error, **comfy)
            logger.info("task {} task={} backend={} error={}", to.value, state.task_id, backend.id, error)
        except (InvalidTransition, NotFound):
            pass
        self.book.close(backend, prompt_id, done=True)

    # ------------------------------------------------------------------ attempts that end without a result
    async def requeue(self, task_id: str, end: AttemptEnd, reason: str, *, prompt_id: str | None) -> None:
        """End the attempt that submitted ``prompt_id``: back to the head of the queue when ``should_retry`` says
        so, else failed. Either way the attempt joins the task's history. An attempt already ended (another path
        got there first) is left alone, but for making sure that a task it sent back to pending is in the queue."""
        try:
            task = await self.store.get(task_id)
            if _ended_unqueued(task, prompt_id):  # Redis failed between the two steps below, the last time
                await self.queue.requeue(task_id)
                return
            if task.prompt_id != prompt_id or task.status not in (TaskStatus.PENDING, TaskStatus.RUNNING):
                return
            attempt = Attempt(backend=task.backend or "", prompt_id=prompt_id or "", submitted_ms=task.submitted_ms,
                              ended_ms=now_ms(), outcome=end.value, error=reason)
            history = [a.model_dump(exclude_none=True) for a in [*task.history, attempt]]
            expect = ("prompt_id", prompt_id) if prompt_id else None
            self.counters[f"attempt_{end.value}"] += 1
            if not should_retry(end, attempts=task.attempts, max_retries=self.config.max_retries):
                await self.store.update(task_id, to=TaskStatus.FAILED, expect=expect, finished_ms=now_ms(),
                                        history=history,
                                        error=f"gave up after {task.attempts} attempts; the last: {reason}")
                logger.warning("task failed task={} attempts={} reason={}", task_id, task.attempts, reason)
                return
            await self.store.update(task_id, to=TaskStatus.PENDING, expect=expect, backend=None, prompt_id=None,
                                    submitted_ms=None, progress=0.0, node=None, node_step=None, node_max=None,
                                    history=history, error=f"retrying: {reason}")
        except (InvalidTransition, NotFound):
            return
        await self.queue.requeue(task_id)
        self.counters["retries"] += 1
        logger.warning("task requeued task={} reason={}", task_id, reason)

    async def backend_lost(self, backend: Backend, reason: str) -> None:
        """Every attempt on a lost backend goes back to the queue (or fails, its retries spent). Each entry leaves
        the book once its attempt has ended: should Redis fail half-way, the entries left are still in the book,
        their tasks still pointing at them, for the next try (the backend's next loss) to end."""
        for prompt_id, state in self.book.of_backend(backend):
            await self.requeue(state.task_id, AttemptEnd.BACKEND_LOST,
                               f"backend {backend.id} was lost: {reason.splitlines()[0]}", prompt_id=prompt_id)
            self.book.drop(backend, prompt_id)

    async def stop_on_backend(self, backend: Backend, prompt_id: str) -> bool:
        """Interrupt the prompt if it runs, or take it out of the backend's queue; returns whether it was running.
        Best effort: an unreachable backend is left as it is. Not fenced by Redis: a leader that woke after its lease
        went (its watchdog's clock jumped) must not interrupt a prompt the new leader re-attached."""
        ensure_leading(self.valid, f"stopping prompt {prompt_id} on {backend.id}")
        try:
            return await backend.client.withdraw(prompt_id)
        except BackendUnavailable as exc:
            logger.warning("could not stop prompt backend={} prompt={} error={}", backend.id, prompt_id, exc)
            return False


def _ended_unqueued(task: Task, prompt_id: str | None) -> bool:
    """Whether the attempt that submitted ``prompt_id`` already ended with the task back to pending: then the task
    may not have reached the queue yet (putting it there again changes nothing)."""
    return (prompt_id is not None and task.status is TaskStatus.PENDING and task.prompt_id is None
            and bool(task.history) and task.history[-1].prompt_id == prompt_id)
