"""Follows every prompt comfyart submitted, from the backend's WebSocket and, whenever that may have missed
something (a reconnect, a silent socket, the end-of-prompt marker), from /history and /queue. It writes
status, progress and outputs into the task records, and frees the backend's slot when a prompt ends.
"""
from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Set, Tuple

import aiohttp
from loguru import logger

from .comfy import protocol
from .comfy.protocol import Executing, ExecutionCached, ExecutionError, ExecutionInterrupted, ExecutionStart, Progress
from .config import TrackingConfig
from .errors import BackendUnavailable, InvalidTransition, NotFound, TransientError
from .models import OutputFile, TaskStatus
from .outputs import OutputStore
from .policy import prompt_progress, should_fail_after_attempts
from .pool import Backend, Pool, now_ms
from .store import TaskStore

MAX_DOWNLOAD_TRIES = 3


@dataclass
class PromptState:
    task_id: str
    total_nodes: int
    submitted: bool = False  # the backend confirmed (or /queue showed) it; before that a lookup proves nothing
    cached: int = 0
    finished: Set[str] = field(default_factory=set)
    node: Optional[str] = None
    settling: bool = False
    download_failures: int = 0


class Tracker:
    def __init__(self, *, store: TaskStore, pool: Pool, outputs: OutputStore, config: TrackingConfig,
                 session: aiohttp.ClientSession) -> None:
        self.store = store
        self.pool = pool
        self.outputs = outputs
        self.config = config
        self.session = session
        self.client_id = f"comfyart-{uuid.uuid4().hex[:16]}"
        self.prompts: Dict[str, PromptState] = {}
        self._watchers: Dict[str, Tuple[Backend, asyncio.Task]] = {}
        pool.on_lost = self.backend_lost

    # ------------------------------------------------------------------ bookkeeping
    def expect(self, backend: Backend, prompt_id: str, task_id: str, prompt: Mapping[str, Any]) -> PromptState:
        """Take a slot on ``backend`` for a prompt about to be submitted."""
        state = PromptState(task_id, total_nodes=len(prompt))
        self.prompts[prompt_id] = state
        backend.prompts[prompt_id] = task_id
        return state

    async def release(self, backend: Backend, prompt_id: str, *, done: bool) -> None:
        self.prompts.pop(prompt_id, None)
        if backend.prompts.pop(prompt_id, None) is not None and done:
            backend.tasks_done += 1
        await self.pool.notify()

    # ------------------------------------------------------------------ loop
    async def run(self) -> None:
        await self.pool.ready.wait()
        await self.recover()
        async with asyncio.TaskGroup() as watchers:
            while True:
                # a backend id can come back as a new backend (a replacement on the same port): watchers are
                # per Backend object, never per id
                for backend_id, (backend, task) in list(self._watchers.items()):
                    if self.pool.backends.get(backend_id) is not backend or task.done():
                        task.cancel()
                        del self._watchers[backend_id]
                for backend in self.pool.healthy():
                    if backend.id not in self._watchers:
                        task = watchers.create_task(self._follow(backend), name=f"follow {backend.id}")
                        self._watchers[backend.id] = (backend, task)
                await self.pool.wait_changed(1.0)

    async def recover(self) -> None:
        """After a restart: re-attach tasks whose backend is still in the pool, requeue the others."""
        requeued = await self.store.recover_claimed()
        reattached = 0
        for task in await self.store.active_tasks():
            backend = self.pool.backends.get(task.backend or "")
            if backend is not None and task.prompt_id:
                state = self.expect(backend, task.prompt_id, task.id, task.prompt or {})
                state.submitted = True
                reattached += 1
            else:
                await self.requeue_task(task.id, "its backend is gone after a restart")
                requeued += 1
        if reattached or requeued:
            logger.info("recovered tasks reattached={} requeued={}", reattached, requeued)

    async def _follow(self, backend: Backend) -> None:
        """One WebSocket per backend, reconnected until the backend leaves the pool."""
        delay = 0.2
        while self.pool.backends.get(backend.id) is backend:
            try:
                async with self.session.ws_connect(backend.client.ws_url(self.client_id), heartbeat=30,
                                                   max_msg_size=64 << 20) as ws:
                    delay = 0.2
                    await self.reconcile(backend)  # whatever happened while we were not listening
                    await self._read(backend, ws)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                logger.debug("websocket down backend={} error={!r}", backend.id, exc)
            except TransientError as exc:
                logger.warning("tracking paused backend={} error={}", backend.id, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _read(self, backend: Backend, ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            try:
                message = await asyncio.wait_for(ws.receive(), self.config.silence_s)
            except TimeoutError:
                if backend.prompts:
                    # a busy backend went quiet: do not trust the socket alone. ComfyUI may also have handed our
                    # client id to another socket, leaving this one open but deaf: reconnecting takes it back.
                    await self.reconcile(backend)
                    return
                continue
            if message.type == aiohttp.WSMsgType.TEXT:
                event = protocol.parse_frame(message.data)
                if event is not None:
                    await self.handle(backend, event)
            elif message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                return

    # ------------------------------------------------------------------ events
    async def handle(self, backend: Backend, event: protocol.Event) -> None:
        prompt_id = getattr(event, "prompt_id", None)
        state = self.prompts.get(prompt_id) if prompt_id else None
        if state is None:
            return  # not ours (another client's prompt, or one already settled)
        task_id = state.task_id
        try:
            if isinstance(event, ExecutionStart):
                state.submitted = True
                await self.store.update(task_id, to=TaskStatus.RUNNING, allowed_from=[TaskStatus.PENDING],
                                        started_ms=now_ms(), progress=0.0)
            elif isinstance(event, ExecutionCached):
                state.cached = len(event.nodes)
                await self._write_progress(state)
            elif isinstance(event, Executing):
                if event.node is None:
                    await self.settle(backend, prompt_id)
                    return
                if state.node is not None:
                    state.finished.add(state.node)
                state.node = event.node
                await self._write_progress(state, node=event.node, node_step=None, node_max=None)
            elif isinstance(event, Progress):
                await self._write_progress(state, step=event.value, step_max=event.max, node=event.node,
                                           node_step=int(event.value), node_max=int(event.max))
            elif isinstance(event, ExecutionError):
                message = protocol.describe_error(event.node_id, event.node_type, event.exception_type,
                                                  event.exception_message)
                await self._finish_failed(backend, prompt_id, state, message)
            elif isinstance(event, ExecutionInterrupted):
                await self._finish_failed(backend, prompt_id, state,
                                          f"interrupted at node {event.node_id} ({event.node_type})")
        except (InvalidTransition, NotFound):
            pass  # the task moved on (canceled, or settled by the watchdog first)

    async def _write_progress(self, state: PromptState, *, step: Optional[float] = None,
                              step_max: Optional[float] = None, **fields: Any) -> None:
        progress = prompt_progress(total_nodes=state.total_nodes, cached_nodes=state.cached,
                                   finished_nodes=len(state.finished), step=step, step_max=step_max)
        await self.store.update(state.task_id, allowed_from=[TaskStatus.PENDING, TaskStatus.RUNNING],
                                progress=progress, **fields)

    # ------------------------------------------------------------------ settling from /history
    async def reconcile(self, backend: Backend) -> None:
        """Look up every confirmed prompt of ``backend`` in /history (and /queue for the unfinished)."""
        pending = [pid for pid, state in self.prompts.items() if pid in backend.prompts and state.submitted]
        if not pending:
            return
        try:
            queue = await backend.client.queue()
        except BackendUnavailable as exc:
            logger.debug("reconcile skipped backend={} error={}", backend.id, exc)
            return
        for prompt_id in pending:
            await self.settle(backend, prompt_id, queue=queue)

    async def settle(self, backend: Backend, prompt_id: str, *, queue: Optional[Dict[str, Any]] = None) -> None:
        state = self.prompts.get(prompt_id)
        if state is None or state.settling:
            return
        state.settling = True
        try:
            try:
                outcome = protocol.history_outcome(await backend.client.history(prompt_id))
                if not outcome.finished and queue is None:
                    queue = await backend.client.queue()
            except BackendUnavailable as exc:
                logger.debug("history lookup failed backend={} prompt={} error={}", backend.id, prompt_id, exc)
                return
            if outcome.finished and outcome.succeeded:
                await self._finish_completed(backend, prompt_id, state, outcome.outputs)
            elif outcome.finished:
                await self._finish_failed(backend, prompt_id, state, outcome.error or "failed")
            elif queue is not None and not protocol.prompt_in_queue(queue, prompt_id):
                await self.release(backend, prompt_id, done=False)
                await self.requeue_task(state.task_id, f"prompt {prompt_id} vanished from {backend.id}")
        finally:
            state.settling = False

    async def _finish_completed(self, backend: Backend, prompt_id: str, state: PromptState,
                                outputs: Dict[str, Any]) -> None:
        try:
            files = await self._download(backend, state.task_id, outputs)
        except BackendUnavailable as exc:
            state.download_failures += 1
            logger.warning("download failed task={} backend={} error={}", state.task_id, backend.id, exc)
            if state.download_failures < MAX_DOWNLOAD_TRIES:
                return  # the next reconcile tries again
            await self._finish_failed(backend, prompt_id, state, f"could not download outputs: {exc}")
            return
        try:
            await self.store.update(state.task_id, to=TaskStatus.COMPLETED, finished_ms=now_ms(), progress=1.0,
                                    outputs=[f.model_dump() for f in files], node=None, node_step=None,
                                    node_max=None)
            logger.info("task completed task={} backend={} prompt={} outputs={}", state.task_id, backend.id,
                        prompt_id, len(files))
        except (InvalidTransition, NotFound):
            pass
        await self.release(backend, prompt_id, done=True)

    async def _download(self, backend: Backend, task_id: str, outputs: Dict[str, Any]) -> List[OutputFile]:
        files = []
        for ref in protocol.output_refs(outputs):
            destination = self.outputs.destination(task_id, ref.filename, ref.node_id)
            size, sha256, content_type = await backend.client.download(
                ref, str(destination), timeout_s=self.config.download_timeout_s)
            files.append(OutputFile(node_id=ref.node_id, filename=destination.name, subfolder=ref.subfolder,
                                    type=ref.type, size=size, content_type=content_type, sha256=sha256,
                                    path=self.outputs.relative(destination)))
        return files

    async def _finish_failed(self, backend: Backend, prompt_id: str, state: PromptState, error: str) -> None:
        try:
            await self.store.update(state.task_id, to=TaskStatus.FAILED, finished_ms=now_ms(), error=error)
            logger.info("task failed task={} backend={} error={}", state.task_id, backend.id, error)
        except (InvalidTransition, NotFound):
            pass
        await self.release(backend, prompt_id, done=True)

    async def requeue_task(self, task_id: str, reason: str) -> None:
        """Back to the head of the queue, or failed when its attempts are used up."""
        try:
            task = await self.store.get(task_id)
            if should_fail_after_attempts(task.attempts, self.config.max_submit_attempts):
                await self.store.update(task_id, to=TaskStatus.FAILED, finished_ms=now_ms(),
                                        error=f"gave up after {task.attempts} attempts: {reason}")
                return
            await self.store.update(task_id, to=TaskStatus.PENDING, backend=None, prompt_id=None, progress=0.0,
                                    node=None, node_step=None, node_max=None, error=f"requeued: {reason}")
        except (InvalidTransition, NotFound):
            return
        await self.store.requeue_front(task_id)
        logger.warning("task requeued task={} reason={}", task_id, reason)

    async def backend_lost(self, backend: Backend, reason: str) -> None:
        for prompt_id in list(backend.prompts):
            state = self.prompts.pop(prompt_id, None)
            backend.prompts.pop(prompt_id, None)
            if state is not None:
                await self.requeue_task(state.task_id, f"backend {backend.id} was lost: {reason.splitlines()[0]}")
