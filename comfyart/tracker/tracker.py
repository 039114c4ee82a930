"""Follows every prompt comfyart submitted, from the backend's WebSocket and, whenever that may have missed
something (a reconnect, a prompt silent for ``silence_s``, the end-of-prompt marker), from /history and /queue.
It writes status, progress and outputs into the task records, frees the backend's slot when a prompt ends, and
ends the attempts that fail for the backend's sake (lost, timed out, vanished): retried, or failed with their
history once ``max_retries`` are spent. Canceling a task goes through it too.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from loguru import logger

from comfyart.clock import now_ms
from comfyart.comfy import protocol
from comfyart.comfy.protocol import (
    Executed,
    Executing,
    ExecutionCached,
    ExecutionError,
    ExecutionInterrupted,
    ExecutionStart,
    ExecutionSuccess,
    Progress,
)
from comfyart.config.sections import TrackingConfig
from comfyart.errors import BackendUnavailable, InvalidTransition, NotFound, TransientError
from comfyart.files.filethread import FileThread
from comfyart.files.objects import ObjectStoreUnavailable, S3Outputs
from comfyart.files.outputs import OutputStore
from comfyart.models import Attempt, OutputFile, Relay, Task, TaskStatus, relay_of
from comfyart.policy.attempts import AttemptEnd, prompt_progress, should_retry
from comfyart.pool.registry import Backend, Pool
from comfyart.store.tasks import TaskStore

BACKEND_FRAME_MAX = 64 << 20  # a larger frame from a backend ends that socket (SaveImageWebsocket sends whole PNGs)
MAX_DOWNLOAD_TRIES = 3
WATCHDOG_TICK_S = 0.5
INTERRUPT_GRACE_S = 60.0
# the messages ComfyUI keeps in a prompt's history (its status.messages)
HISTORY_MESSAGES = frozenset({"execution_start", "execution_cached", "execution_success", "execution_error",
                              "execution_interrupted"})


@dataclass
class PromptState:
    task_id: str
    total_nodes: int
    backend: Backend
    submitted: bool = False  # the backend confirmed (or /queue showed) it; before that a lookup proves nothing
    since: float = field(default_factory=time.monotonic)  # submission, for task_timeout
    last_seen: float = field(default_factory=time.monotonic)  # last event or lookup, for the watchdog
    cached: int = 0
    finished: set[str] = field(default_factory=set)
    node: str | None = None
    settling: bool = False
    download_failures: int = 0
    # what the socket showed: when it saw the whole run (start, nothing cached, success, on one connection), the
    # outputs of its ``executed`` events are the history's outputs and /history need not be asked
    epoch: int = -1  # the backend's socket connection that carried execution_start
    cache_known: bool = False
    succeeded: bool = False
    outputs: dict[str, Any] = field(default_factory=dict)
    unsaved: dict[str, Any] = field(default_factory=dict)  # progress fields the next flush writes
    started: bool = False  # recorded as running (its execution_start, or /queue showed it running)
    interrupt_by: float | None = None  # interrupted at a client's request: canceled once the backend says so,
    # or at this monotonic time at the latest
    relay: Relay | None = None  # queued through the ComfyUI-compatible API: its frames go to its client
    messages: list[list[Any]] = field(default_factory=list)  # its execution_* messages, for that client


class FrameSink(Protocol):
    """Where the frames of prompts queued through the ComfyUI-compatible API go (``front.FrontDoor``)."""

    def forward(self, relay: Relay, kind: str, data: dict[str, Any]) -> None: ...

    def forward_binary(self, relay: Relay, payload: bytes) -> None: ...


class Tracker:
    def __init__(self, *, store: TaskStore, pool: Pool, outputs: OutputStore, config: TrackingConfig,
                 session: aiohttp.ClientSession, client_id: str, objects: S3Outputs | None = None) -> None:
        self.store = store
        self.counters: dict[str, int] = collections.Counter()  # attempt ends and retries, for /metrics
        self.pool = pool
        self.outputs = outputs
        self.objects = objects  # outputs go to object storage rather than stay in ``outputs``
        self.config = config
        self.session = session
        self.client_id = client_id  # kept across restarts: events of earlier prompts still reach us
        self.prompts: dict[str, PromptState] = {}
        self._watchers: dict[str, tuple[Backend, asyncio.Task]] = {}
        self._epochs: dict[str, int] = {}  # backend id -> how many times its socket connected
        self._running: dict[str, str] = {}  # backend id -> the prompt it runs: its preview frames carry no id
        self.frames: FrameSink | None = None
        self.files = FileThread("comfyart outputs")  # every download's file work, off the event loop
        pool.on_lost = self.backend_lost

    # ------------------------------------------------------------------ bookkeeping
    def expect(self, backend: Backend, prompt_id: str, task_id: str, prompt: Mapping[str, Any],
               cost: float = 0.0, relay: Relay | None = None) -> PromptState:
        """Take a slot on ``backend`` for a prompt about to be submitted (``cost``: its graph's estimate)."""
        state = PromptState(task_id, total_nodes=len(prompt), backend=backend, relay=relay)
        self.prompts[prompt_id] = state
        backend.prompts[prompt_id] = task_id
        if cost:
            backend.prompt_costs[prompt_id] = cost
        return state

    async def release(self, backend: Backend, prompt_id: str, *, done: bool) -> None:
        self.prompts.pop(prompt_id, None)
        backend.prompt_costs.pop(prompt_id, None)
        if backend.prompts.pop(prompt_id, None) is not None and done:
            backend.tasks_done += 1
        if not backend.prompts:
            backend.idle_since = time.monotonic()
        self.pool.notify()

    # ------------------------------------------------------------------ loop
    async def run(self) -> None:
        try:
            await self._run()
        finally:
            await self.files.aclose()  # the files being written are finished first

    async def _run(self) -> None:
        await self.pool.ready.wait()
        await self.recover()
        async with asyncio.TaskGroup() as watchers:
            watchers.create_task(self._watchdog(), name="prompt watchdog")
            watchers.create_task(self._progress_writer(), name="progress writer")
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
                # confirmed or not, the first lookup decides: /history, /queue, or never seen (requeued)
                state = self.expect(backend, task.prompt_id, task.id, task.prompt or {}, relay=relay_of(task))
                state.submitted = True
                state.started = task.status is TaskStatus.RUNNING
                if task.submitted_ms:
                    state.since -= max(0.0, time.time() - task.submitted_ms / 1000)  # task_timeout keeps counting
                reattached += 1
            else:
                await self.requeue_task(task.id, AttemptEnd.BACKEND_LOST, "its backend is gone after a restart",
                                        prompt_id=task.prompt_id)
                requeued += 1
        if reattached or requeued:
            logger.info("recovered tasks reattached={} requeued={}", reattached, requeued)

    async def _follow(self, backend: Backend) -> None:
        """One WebSocket per backend, reconnected until the backend leaves the pool."""
        delay = 0.2
        while self.pool.backends.get(backend.id) is backend:
            try:
                async with self.session.ws_connect(backend.client.ws_url(self.client_id), heartbeat=30,
                                                   max_msg_size=BACKEND_FRAME_MAX) as ws:
                    delay = 0.2
                    self._epochs[backend.id] = self._epochs.get(backend.id, 0) + 1
                    await self.reconcile(backend)  # whatever happened while we were not listening
                    await self._read(backend, ws)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                logger.debug("websocket down backend={} error={!r}", backend.id, exc)
            except TransientError as exc:
                logger.warning("tracking paused backend={} error={}", backend.id, exc)
            except Exception as exc:  # noqa: BLE001 - whatever one backend sends must not stop the tracker
                # a frame that got past the protocol's checks and broke its handler: a bug to fix, logged whole;
                # meanwhile this backend's socket starts over, and the watchdog's /history checks cover its prompts
                logger.opt(exception=exc).error("a frame from backend={} could not be handled; reconnecting",
                                                backend.id)
                delay = 5.0
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _read(self, backend: Backend, ws: aiohttp.ClientWebSocketResponse) -> None:
        """The socket's frames until it closes, with its silence watched beside it (``_watch_silence``): a
        timeout around every receive sets and cancels a timer per frame, close to a tenth of the event loop's
        time at full throughput."""
        heard = [time.monotonic()]  # when the last frame arrived
        watch = asyncio.get_running_loop().create_task(self._watch_silence(backend, ws, heard),
                                                       name=f"silence of {backend.id}")
        try:
            await self._frames(backend, ws, heard)
        finally:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
        if not watch.cancelled() and watch.exception() is not None:
            raise watch.exception()  # e.g. Redis away during a reconcile: _follow pauses and reconnects

    async def _watch_silence(self, backend: Backend, ws: aiohttp.ClientWebSocketResponse, heard: list[float]) -> None:
        """A busy backend quiet for ``silence_s``: do not trust the socket alone. When /history or /queue show what
        the socket did not say, ComfyUI may have handed our client id to another socket, leaving this one open but
        deaf: closing it makes ``_follow`` reconnect, which takes it back. A node that is simply long (nothing
        missed) keeps the socket: a reconnect loses the frames sent while it happens."""
        try:
            while True:
                quiet_for = time.monotonic() - heard[0]
                if quiet_for < self.config.silence_s:
                    await asyncio.sleep(self.config.silence_s - quiet_for)
                    continue
                heard[0] = time.monotonic()  # the next look is silence_s later, unless a frame comes first
                if backend.prompts and await self.reconcile(backend):
                    break
        except Exception:
            await ws.close()  # ends the reader; _read raises this
            raise
        await ws.close()

    async def _frames(self, backend: Backend, ws: aiohttp.ClientWebSocketResponse, heard: list[float]) -> None:
        while True:
            message = await ws.receive()
            heard[0] = time.monotonic()
            if message.type == aiohttp.WSMsgType.TEXT:
                kind = protocol.frame_kind(message.data)
                if kind is not None and kind not in protocol.TRACKED_KINDS and not self._relaying(backend):
                    continue  # nobody to pass it on to, and nothing in it for the tracker
                kind, data = protocol.split_frame(message.data)
                if data is None:
                    continue
                if self.frames is not None:
                    self._relay(backend, kind, data)
                event = protocol.parse_message(kind, data)
                if event is not None:
                    await self.handle(backend, event)
            elif message.type == aiohttp.WSMsgType.BINARY:
                state = self.prompts.get(self._running.get(backend.id, ""))
                if state is not None and state.relay is not None and self.frames is not None:
                    self.frames.forward_binary(state.relay, message.data)
            elif message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                return

    def _relaying(self, backend: Backend) -> bool:
        """Whether a prompt of ``backend`` was queued through the ComfyUI-compatible API: its client hears every
        frame about it."""
        if self.frames is None:
            return False
        for prompt_id in backend.prompts:
            state = self.prompts.get(prompt_id)
            if state is not None and state.relay is not None:
                return True
        return False

    def _relay(self, backend: Backend, kind: str, data: dict[str, Any]) -> None:
        """Pass a frame on to the ComfyUI client whose prompt it is about."""
        prompt_id = data.get("prompt_id")
        if kind == "execution_start":
            self._running[backend.id] = prompt_id
        elif kind == "executing" and data.get("node") is None and self._running.get(backend.id) == prompt_id:
            del self._running[backend.id]
        state = self.prompts.get(prompt_id) if prompt_id else None
        if state is None or state.relay is None:
            return
        if kind in HISTORY_MESSAGES:
            state.messages.append([kind, data])
        assert self.frames is not None
        self.frames.forward(state.relay, kind, data)

    async def _watchdog(self) -> None:
        """Per prompt: past ``task_timeout_s`` it is ended and retried; silent for ``silence_s`` it is looked up
        in /history (a socket can miss events, or belong to a backend that restarted and forgot the prompt)."""
        async with asyncio.TaskGroup() as checks:
            busy: set[str] = set()
            while True:
                await asyncio.sleep(WATCHDOG_TICK_S)
                now = time.monotonic()
                for prompt_id, state in list(self.prompts.items()):
                    if prompt_id in busy or not state.submitted or state.settling:
                        continue
                    if state.interrupt_by is not None and now >= state.interrupt_by:
                        check = self._cancel_quietly(state.task_id)
                    elif now - state.since >= self.config.task_timeout_s:
                        check = self._time_out(prompt_id, state)
                    elif now - state.last_seen >= self.config.silence_s:
                        state.last_seen = now
                        check = self.settle(state.backend, prompt_id)
                    else:
                        continue
                    busy.add(prompt_id)
                    task = checks.create_task(check, name=f"watchdog {prompt_id}")
                    task.add_done_callback(lambda _, pid=prompt_id: busy.discard(pid))

    async def _cancel_quietly(self, task_id: str) -> None:
        with contextlib.suppress(InvalidTransition, NotFound, TransientError):
            await self.cancel(task_id)

    async def _time_out(self, prompt_id: str, state: PromptState) -> None:
        backend = state.backend
        if self.prompts.get(prompt_id) is not state:
            return
        running = await self.stop_on_backend(backend, prompt_id)
        if running:
            backend.stuck_prompt = prompt_id  # unhealthy while it still holds it: a hung node ignores /interrupt
        await self.release(backend, prompt_id, done=False)
        await self.requeue_task(state.task_id, AttemptEnd.TIMED_OUT,
                                f"no result from {backend.id} within task_timeout ({self.config.task_timeout_s:g} s)",
                                prompt_id=prompt_id)

    async def stop_on_backend(self, backend: Backend, prompt_id: str) -> bool:
        """Interrupt the prompt if it runs, or take it out of the backend's queue; returns whether it was running.
        Best effort: an unreachable backend is left as it is."""
        try:
            queue = await backend.client.queue()
            if protocol.prompt_running(queue, prompt_id):
                await backend.client.interrupt(prompt_id)
                return True
            if protocol.prompt_in_queue(queue, prompt_id):
                await backend.client.delete_queued(prompt_id)
        except BackendUnavailable as exc:
            logger.warning("could not stop prompt backend={} prompt={} error={}", backend.id, prompt_id, exc)
        return False

    async def interrupt(self, task_id: str) -> bool:
        """ComfyUI's POST /interrupt for one task, when its prompt is the one its backend runs now (asked of the
        backend: a lost execution_start must not make it look queued); otherwise nothing happens. The backend is
        asked to interrupt it, and the task ends ``canceled`` when the backend reports the interruption (its
        frames until then, as from one ComfyUI), or after ``INTERRUPT_GRACE_S`` at the latest."""
        task = await self.store.get(task_id)
        state = self.prompts.get(task.prompt_id or "")
        if state is None or state.task_id != task_id or task.status not in (TaskStatus.PENDING, TaskStatus.RUNNING):
            return False
        try:
            running = protocol.prompt_running(await state.backend.client.queue(), task.prompt_id or "")
        except BackendUnavailable:
            running = task.status is TaskStatus.RUNNING
        if not running:
            return False
        state.interrupt_by = time.monotonic() + INTERRUPT_GRACE_S
        try:
            await state.backend.client.interrupt(task.prompt_id or "")
        except BackendUnavailable:
            state.interrupt_by = time.monotonic()  # the watchdog cancels it now
        return True

    async def cancel(self, task_id: str) -> Task:
        """DELETE /api/tasks/{id}: a queued task leaves the queue; a submitted one is interrupted (or taken out of
        the backend's queue). Either way it ends ``canceled``; a final task raises InvalidTransition."""
        await self.store.cancel(task_id)
        task = await self.store.get(task_id)  # read after the status change: a submission recorded before it shows
        state = self.prompts.get(task.prompt_id or "")
        if state is not None:
            state.relay = None  # its client heard the end already: no frame of it may follow
        if task.prompt_id and state is not None and state.task_id == task_id:
            await self.stop_on_backend(state.backend, task.prompt_id)
            await self.release(state.backend, task.prompt_id, done=False)
        logger.info("task canceled task={}", task_id)
        return task

    # ------------------------------------------------------------------ events
    async def handle(self, backend: Backend, event: protocol.Event) -> None:
        prompt_id = getattr(event, "prompt_id", None)
        state = self.prompts.get(prompt_id) if prompt_id else None
        if state is None:
            return  # not ours (another client's prompt, or one already settled)
        state.last_seen = time.monotonic()
        try:
            if isinstance(event, ExecutionStart):
                state.submitted = True
                state.epoch = self._epochs.get(backend.id, 0)
                await self._mark_running(state)
            elif isinstance(event, ExecutionCached):
                state.cached = len(event.nodes)
                state.cache_known = True
                self._note_progress(prompt_id, state)
            elif isinstance(event, Executing):
                if event.node is None:
                    seen_whole = (state.succeeded and state.cache_known and state.cached == 0
                                  and state.epoch == self._epochs.get(backend.id))
                    await self.settle(backend, prompt_id, outputs=state.outputs if seen_whole else None)
                    return
                if state.node is not None:
                    state.finished.add(state.node)
                state.node = event.node
                self._note_progress(prompt_id, state, node=event.node, node_step=None, node_max=None)
            elif isinstance(event, Progress):
                self._note_progress(prompt_id, state, step=event.value, step_max=event.max, node=event.node,
                                    node_step=int(event.value), node_max=int(event.max))
            elif isinstance(event, Executed):
                state.outputs[event.node] = event.output
            elif isinstance(event, ExecutionSuccess):
                state.succeeded = True
            elif isinstance(event, ExecutionError):
                message = protocol.describe_error(event.node_id, event.node_type, event.exception_type,
                                                  event.exception_message)
                await self._finish_failed(backend, prompt_id, state, message)
            elif isinstance(event, ExecutionInterrupted):
                await self._finish_failed(backend, prompt_id, state,
                                          f"interrupted at node {event.node_id} ({event.node_type})",
                                          to=TaskStatus.CANCELED if state.interrupt_by else TaskStatus.FAILED)
        except (InvalidTransition, NotFound):
            pass  # the task moved on (canceled, or settled by the watchdog first)

    async def _mark_running(self, state: PromptState) -> None:
        state.started = True
        await self.store.update(state.task_id, to=TaskStatus.RUNNING, allowed_from=[TaskStatus.PENDING],
                                started_ms=now_ms(), progress=0.0)

    def _note_progress(self, prompt_id: str, state: PromptState, *, step: float | None = None,
                       step_max: float | None = None, **fields: Any) -> None:
        """Progress is merged in memory and written by ``_progress_writer``: a sampler can send hundreds of
        steps a second, and a short prompt ends before its progress is worth a write."""
        progress = prompt_progress(total_nodes=state.total_nodes, cached_nodes=state.cached,
                                   finished_nodes=len(state.finished), step=step, step_max=step_max)
        state.unsaved.update(fields, progress=progress)

    async def _progress_writer(self) -> None:
        while True:
            await asyncio.sleep(self.config.progress_interval_s)
            await self.write_progress()

    async def write_progress(self) -> None:
        """Write the progress noted since the last call, every prompt's in one round trip."""
        updates = []
        for prompt_id, state in self.prompts.items():
            if state.unsaved:
                updates.append((state.task_id, prompt_id, state.unsaved))
                state.unsaved = {}
        try:
            await self.store.write_progress(updates)
        except TransientError as exc:
            logger.debug("progress not written error={}", exc)  # newer progress follows

    # ------------------------------------------------------------------ settling from /history
    async def reconcile(self, backend: Backend) -> bool:
        """Look up every confirmed prompt of ``backend`` in /history (and /queue for the unfinished); True when
        that told of something the socket had not (a prompt ended, started, or gone)."""
        pending = [pid for pid, state in self.prompts.items() if pid in backend.prompts and state.submitted]
        if not pending:
            return False
        try:
            queue = await backend.client.queue()
        except BackendUnavailable as exc:
            logger.debug("reconcile skipped backend={} error={}", backend.id, exc)
            return False
        missed = False
        for prompt_id in pending:
            missed |= await self.settle(backend, prompt_id, queue=queue)
        return missed

    async def settle(self, backend: Backend, prompt_id: str, *, queue: dict[str, Any] | None = None,
                     outputs: dict[str, Any] | None = None) -> bool:
        """End a prompt as /history (and /queue) tell; with ``outputs``, the socket saw the whole successful run
        and those are its outputs. True when the lookups changed what was known of it (ended, started, gone)."""
        state = self.prompts.get(prompt_id)
        if state is None or state.settling:
            return False
        state.settling = True
        try:
            try:
                if outputs is not None:
                    outcome = protocol.HistoryOutcome(finished=True, succeeded=True, outputs=outputs)
                else:
                    outcome = protocol.history_outcome(await backend.client.history(prompt_id))
                if not outcome.finished and queue is None:
                    queue = await backend.client.queue()
                    if not protocol.prompt_in_queue(queue, prompt_id):
                        # it may have finished between the two lookups: /history again, before calling it lost
                        outcome = protocol.history_outcome(await backend.client.history(prompt_id))
            except BackendUnavailable as exc:
                logger.debug("history lookup failed backend={} prompt={} error={}", backend.id, prompt_id, exc)
                return False
            if outcome.finished and outcome.succeeded:
                await self._finish_completed(backend, prompt_id, state, outcome.outputs)
            elif outcome.finished:
                await self._finish_failed(backend, prompt_id, state, outcome.error or "failed")
            elif queue is not None and protocol.prompt_running(queue, prompt_id) and not state.started:
                # its execution_start was lost (sent while the socket reconnected): /queue shows it running
                with contextlib.suppress(InvalidTransition, NotFound):
                    await self._mark_running(state)
            elif queue is not None and not protocol.prompt_in_queue(queue, prompt_id):
                await self.release(backend, prompt_id, done=False)
                await self.requeue_task(state.task_id, AttemptEnd.VANISHED,
                                        f"{backend.id} has no record of prompt {prompt_id} (restarted?)",
                                        prompt_id=prompt_id)
            else:
                return False  # still queued or running, as the socket said
            return True
        finally:
            state.settling = False

    async def _finish_completed(self, backend: Backend, prompt_id: str, state: PromptState,
                                outputs: dict[str, Any]) -> None:
        try:
            files = await self._download(backend, state.task_id, outputs)
        except (BackendUnavailable, ObjectStoreUnavailable) as exc:
            state.download_failures += 1
            logger.warning("download failed task={} backend={} error={}", state.task_id, backend.id, exc)
            if state.download_failures < MAX_DOWNLOAD_TRIES:
                return  # the next reconcile tries again
            await self._finish_failed(backend, prompt_id, state, f"could not download outputs: {exc}")
            return
        try:
            comfy = {"comfy_outputs": outputs, "comfy_messages": state.messages} if state.relay is not None else {}
            await self.store.update(state.task_id, to=TaskStatus.COMPLETED, finished_ms=now_ms(), progress=1.0,
                                    outputs=[f.model_dump(exclude_none=True) for f in files], node=None,
                                    node_step=None, node_max=None, **comfy)
            logger.info("task completed task={} backend={} prompt={} outputs={}", state.task_id, backend.id,
                        prompt_id, len(files))
        except (InvalidTransition, NotFound):
            pass
        await self.release(backend, prompt_id, done=True)

    async def _download(self, backend: Backend, task_id: str, outputs: dict[str, Any]) -> list[OutputFile]:
        files = []
        for ref in protocol.output_refs(outputs):
            path, size, sha256, content_type = await backend.client.download(
                ref, lambda ref=ref: str(self.outputs.destination(task_id, ref.filename, ref.node_id)),
                timeout_s=self.config.download_timeout_s, offload=self.files.run)
            destination = Path(path)
            stored = OutputFile(node_id=ref.node_id, filename=destination.name, subfolder=ref.subfolder,
                                type=ref.type, size=size, content_type=content_type, sha256=sha256,
                                path=self.outputs.relative(destination))
            if self.objects is not None:
                key = self.objects.key(task_id, destination.name)
                url = await self.objects.put(destination, key, content_type)
                await self.files.run(destination.unlink)
                stored = stored.model_copy(update={"path": key, "bucket": self.objects.bucket, "url": url})
            files.append(stored)
        return files

    async def _finish_failed(self, backend: Backend, prompt_id: str, state: PromptState, error: str, *,
                             to: TaskStatus = TaskStatus.FAILED) -> None:
        try:
            comfy: dict[str, Any] = {}
            if state.relay is not None:  # ComfyUI keeps what a failed prompt showed before it failed
                comfy.update(comfy_messages=state.messages, comfy_outputs=state.outputs)
            await self.store.update(state.task_id, to=to, finished_ms=now_ms(), error=error, **comfy)
            logger.info("task {} task={} backend={} error={}", to.value, state.task_id, backend.id, error)
        except (InvalidTransition, NotFound):
            pass
        await self.release(backend, prompt_id, done=True)

    async def requeue_task(self, task_id: str, end: AttemptEnd, reason: str, *, prompt_id: str | None) -> None:
        """End the attempt that submitted ``prompt_id``: back to the head of the queue when ``should_retry`` says
        so, else failed. Either way the attempt joins the task's history. An attempt already ended (another path
        got there first) is left alone."""
        try:
            task = await self.store.get(task_id)
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
        await self.store.requeue(task_id)
        self.counters["retries"] += 1
        logger.warning("task requeued task={} reason={}", task_id, reason)

    async def backend_lost(self, backend: Backend, reason: str) -> None:
        for prompt_id in list(backend.prompts):
            state = self.prompts.pop(prompt_id, None)
            backend.prompts.pop(prompt_id, None)
            backend.prompt_costs.pop(prompt_id, None)
            if state is not None:
                await self.requeue_task(state.task_id, AttemptEnd.BACKEND_LOST,
                                        f"backend {backend.id} was lost: {reason.splitlines()[0]}",
                                        prompt_id=prompt_id)
