"""Follows every prompt comfyart submitted, from the backend's WebSocket and, whenever that may have missed
something (a reconnect, a prompt silent for ``silence_s``, the end-of-prompt marker), from /history and /queue.
What an event means is ``reactions``' to say; how an attempt ends is ``outcomes``'. Canceling and interrupting a
task go through it too.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from loguru import logger

from comfyart.bus import EventHub
from comfyart.clock import now_ms
from comfyart.comfy import protocol
from comfyart.comfy.websocket import BackendSocket
from comfyart.config.sections import TrackingConfig
from comfyart.errors import BackendUnavailable, Fenced, InvalidTransition, NotFound, TransientError
from comfyart.models import Relay, Task, TaskStatus
from comfyart.policy.attempts import AttemptEnd
from comfyart.pool.backend import Backend
from comfyart.pool.registry import Pool
from comfyart.store.fence import ensure_leading
from comfyart.store.queue import TaskQueue
from comfyart.store.tasks import TaskStore
from comfyart.tracker.cancels import CancelFollower
from comfyart.tracker.latecomers import LATE_WATCH_MIN_S, LateGuard
from comfyart.tracker.outcomes import Outcomes
from comfyart.tracker.prompts import Preview, PromptBook, PromptState, note_running
from comfyart.tracker.reactions import Fail, MarkRunning, Settle, react
from comfyart.tracker.recovery import recover
from comfyart.tracker.watchdog import watch_prompts

FOLLOW_PASS_S = 1.0  # the longest a backend's socket that ended waits to be started again
INTERRUPT_GRACE_S = 60.0
BROKEN_FRAME_PAUSE_S = 5.0  # after a frame that broke its handler, before that backend's socket starts over
# the messages ComfyUI keeps in a prompt's history (its status.messages)
HISTORY_MESSAGES = frozenset({"execution_start", "execution_cached", "execution_success", "execution_error",
                              "execution_interrupted"})


class FrameSink(Protocol):
    """Where the frames of prompts queued through the ComfyUI-compatible API go (``api.comfyui.relay``)."""

    def forward(self, relay: Relay, kind: str, data: dict[str, Any]) -> None: ...

    def forward_binary(self, relay: Relay, payload: bytes) -> None: ...


class Tracker:
    def __init__(self, *, store: TaskStore, queue: TaskQueue, pool: Pool, book: PromptBook, outcomes: Outcomes,
                 config: TrackingConfig, client_id: str, valid: Callable[[], bool] | None = None,
                 lease_s: float = 0.0) -> None:
        self.store = store
        self.queue = queue
        self.pool = pool
        self.book = book
        self.outcomes = outcomes
        self.config = config
        self.client_id = client_id  # kept across restarts: events of earlier prompts still reach us
        # the leadership's term still valid: checked before each socket connects, as ComfyUI hands the shared
        # client id to the newest socket, and a replica that no longer leads must not take it back from the leader
        self.valid = valid
        # a vanished prompt may still land, POSTed late by a leader whose lease ran out meanwhile (``latecomers``)
        self.late = LateGuard(max(lease_s + config.submit_timeout_s, LATE_WATCH_MIN_S), book)
        self.frames: FrameSink | None = None
        self.stopping: set[str] = set()  # tasks a request on this replica cancels or interrupts right now
        self._watchers: dict[str, tuple[Backend, asyncio.Task[None]]] = {}
        self._epochs: dict[str, int] = {}  # backend id -> how many times its socket connected
        self._running: dict[str, str] = {}  # backend id -> the prompt it runs: its preview frames carry no id
        self.previews = EventHub()  # every prompt's previews, for the live streams that show them (api.v2)
        self.recovered = asyncio.Event()  # this term's recovery is done: the dispatcher may claim

    # ------------------------------------------------------------------ loop
    async def run(self) -> None:
        """Follow the backends for one leader's term, from a fresh start: what an earlier term knew (sockets,
        their epochs, the prompts they ran) is forgotten, and the recovery reads again what is in flight. The
        outputs' file thread is closed at the end and starts again with the next term's first download."""
        self.recovered.clear()
        self._watchers, self._epochs, self._running = {}, {}, {}
        try:
            await self._run()
        finally:
            await self.outcomes.aclose()

    async def _run(self) -> None:
        await self.pool.ready.wait()
        await self.recover()
        self.recovered.set()
        async with asyncio.TaskGroup() as watchers:
            watchers.create_task(watch_prompts(self), name="prompt watchdog")
            if self.store.stream:  # replicated: cancels made on other replicas reach the leader as events
                watchers.create_task(CancelFollower(self).run(), name="cancel follower")
            watchers.create_task(self._progress_writer(), name="progress writer")
            seen, next_pass = -1, 0.0
            while True:
                # the pool changes at every freed slot: the backends are gone through again only when one
                # joined, left or changed state (its generation), and once a second for sockets that ended
                if self.pool.generation != seen or time.monotonic() >= next_pass:
                    seen, next_pass = self.pool.generation, time.monotonic() + FOLLOW_PASS_S
                    self._follow_healthy(watchers)
                await self.pool.wait_changed(FOLLOW_PASS_S)

    def _follow_healthy(self, watchers: asyncio.TaskGroup) -> None:
        """A socket for every healthy backend. A backend id can come back as a new backend (a replacement on the
        same port): watchers are per Backend object, never per id."""
        for backend_id, (backend, task) in list(self._watchers.items()):
            if self.pool.backends.get(backend_id) is not backend or task.done():
                task.cancel()
                del self._watchers[backend_id]
        for backend in self.pool.healthy():
            if backend.id not in self._watchers:
                task = watchers.create_task(self._follow(backend), name=f"follow {backend.id}")
                self._watchers[backend.id] = (backend, task)

    async def recover(self) -> None:
        """At the start of a term: re-attach tasks whose backend is still in the pool, requeue the others."""
        await recover(store=self.store, queue=self.queue, pool=self.pool, book=self.book, outcomes=self.outcomes)

    # ------------------------------------------------------------------ sockets
    async def _follow(self, backend: Backend) -> None:
        """One WebSocket per backend, reconnected (``comfy.websocket``) until the backend leaves the pool."""
        guard = functools.partial(ensure_leading, self.valid, f"the socket to {backend.id}")
        async with contextlib.aclosing(backend.client.connections(self.client_id, before_connect=guard)) as sockets:
            async for socket in sockets:
                if self.pool.backends.get(backend.id) is not backend:
                    return
                self._epochs[backend.id] = self._epochs.get(backend.id, 0) + 1
                backend.socket = socket  # what it hears keeps a static backend from being given up for lost
                try:
                    await self.reconcile(backend)  # whatever happened while we were not listening
                    await self._read(backend, socket)
                except BackendUnavailable as exc:
                    logger.debug("websocket down backend={} error={}", backend.id, exc)
                except TransientError as exc:
                    logger.warning("tracking paused backend={} error={}", backend.id, exc)
                except Fenced:
                    raise  # another replica leads: this term is over
                except Exception as exc:  # noqa: BLE001 - whatever one backend sends must not stop the tracker
                    # a frame that got past the protocol's checks and broke its handler: a bug to fix, logged
                    # whole; meanwhile this backend's socket starts over, and the watchdog's /history checks cover
                    # its prompts
                    logger.opt(exception=exc).error("a frame from backend={} could not be handled; reconnecting",
                                                    backend.id)
                    await asyncio.sleep(BROKEN_FRAME_PAUSE_S)

    async def _read(self, backend: Backend, socket: BackendSocket) -> None:
        """The socket's frames until it closes, with its silence watched beside it (``_watch_silence``): a
        timeout around every receive sets and cancels a timer per frame, close to a tenth of the event loop's
        time at full throughput."""
        watch = asyncio.get_running_loop().create_task(self._watch_silence(backend, socket),
                                                       name=f"silence of {backend.id}")
        try:
            await self._frames(backend, socket)
        finally:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
        failure = None if watch.cancelled() else watch.exception()
        if failure is not None:
            raise failure  # e.g. Redis away during a reconcile: _follow pauses and reconnects

    async def _watch_silence(self, backend: Backend, socket: BackendSocket) -> None:
        """A busy backend quiet for ``silence_s``: do not trust the socket alone. When /history or /queue show what
        the socket did not say, ComfyUI may have handed our client id to another socket, leaving this one open but
        deaf: closing it makes ``_follow`` reconnect, which takes it back. A node that is simply long (nothing
        missed) keeps the socket: a reconnect loses the frames sent while it happens."""
        quiet_since = socket.heard
        try:
            while True:
                quiet_since = max(quiet_since, socket.heard)
                quiet_for = time.monotonic() - quiet_since
                if quiet_for < self.config.silence_s:
                    await asyncio.sleep(self.config.silence_s - quiet_for)
                    continue
                quiet_since = time.monotonic()  # the next look is silence_s later, unless a frame comes first
                if backend.prompts and await self.reconcile(backend):
                    break
        finally:
            await socket.close()  # ends the reader; _read raises what this raised

    async def _frames(self, backend: Backend, socket: BackendSocket) -> None:
        async for frame in socket.frames():
            if isinstance(frame, bytes):
                self._preview(backend, frame)
                continue
            kind = protocol.frame_kind(frame)
            if kind is not None and kind not in protocol.TRACKED_KINDS and not self._relaying(backend):
                continue  # nobody to pass it on to, and nothing in it for the tracker
            kind, data = protocol.split_frame(frame)
            if data is None:
                continue
            note_running(self._running, backend.id, kind, data)
            if self.frames is not None:
                self._relay(backend, kind, data)
            event = protocol.parse_message(kind, data)
            if event is not None:
                await self.handle(backend, event)

    # ------------------------------------------------------------------ frames for ComfyUI clients
    def _relaying(self, backend: Backend) -> bool:
        """Whether a prompt of ``backend`` was queued through the ComfyUI-compatible API: its client hears every
        frame about it."""
        return self.frames is not None and any((state := self.book.get(prompt_id)) is not None
                                               and state.relay is not None for prompt_id in backend.prompts)

    def _relay(self, backend: Backend, kind: str, data: dict[str, Any]) -> None:
        """Pass a frame on to the ComfyUI client whose prompt it is about."""
        prompt_id = data.get("prompt_id")
        state = self.book.get(prompt_id) if isinstance(prompt_id, str) else None
        if state is None or state.relay is None or self.frames is None:
            return
        if kind in HISTORY_MESSAGES:
            state.messages.append([kind, data])
        self.frames.forward(state.relay, kind, data)

    def _preview(self, backend: Backend, payload: bytes) -> None:
        """A preview (of the prompt the backend runs: it names none) goes to its ComfyUI client, is kept as its
        latest, and is published on ``previews`` while someone listens."""
        if (state := self.book.get(self._running.get(backend.id, ""))) is None:
            return
        if state.relay is not None and self.frames is not None:
            self.frames.forward_binary(state.relay, payload)
        state.preview = Preview(state.node, payload)
        if self.previews.listening:
            self.previews.publish({"type": "preview", "id": state.task_id, "preview": state.preview})

    # ------------------------------------------------------------------ events
    async def handle(self, backend: Backend, event: protocol.Event) -> None:
        prompt_id = getattr(event, "prompt_id", None)
        state = self.book.get(prompt_id) if prompt_id else None
        if state is None or prompt_id is None:
            await self.late.on_frame(backend, prompt_id)  # a prompt that vanished, landing late: taken off
            return  # not ours (another client's prompt, or one already settled)
        reaction = react(state, event, epoch=self._epochs.get(backend.id, 0), now=time.monotonic())
        try:
            if isinstance(reaction, MarkRunning):
                await self._mark_running(prompt_id, state)
            elif isinstance(reaction, Settle):
                await self.settle(backend, prompt_id, outputs=reaction.outputs)
            elif isinstance(reaction, Fail):
                await self.outcomes.failed(backend, prompt_id, state, reaction.error, to=reaction.status)
        except (InvalidTransition, NotFound):
            pass  # the task moved on (canceled, or settled by the watchdog first)

    async def _mark_running(self, prompt_id: str, state: PromptState) -> None:
        state.started = True
        await self.store.update(state.task_id, to=TaskStatus.RUNNING, allowed_from=[TaskStatus.PENDING],
                                expect=("prompt_id", prompt_id), started_ms=now_ms(), progress=0.0)

    async def _progress_writer(self) -> None:
        while True:
            await asyncio.sleep(self.config.progress_interval_s)
            await self.write_progress()

    async def write_progress(self) -> None:
        """Write the progress noted since the last call, every prompt's in one round trip."""
        updates = []
        for prompt_id, state in self.book.items():
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
        that told of something the socket had not (a prompt ended, started, or gone). A vanished prompt that
        landed late after all is taken off the backend (``latecomers``)."""
        pending = [pid for pid, state in self.book.items() if pid in backend.prompts and state.submitted]
        if not pending and not self.late.expects():
            return False
        try:
            queue = await backend.client.queue()
        except BackendUnavailable as exc:
            logger.debug("reconcile skipped backend={} error={}", backend.id, exc)
            return False
        await self.late.on_queue(backend, queue)
        missed = False
        for prompt_id in pending:
            missed |= await self.settle(backend, prompt_id, queue=queue)
        return missed

    async def settle(self, backend: Backend, prompt_id: str, *, queue: dict[str, Any] | None = None,
                     outputs: dict[str, Any] | None = None) -> bool:
        """End a prompt as /history (and /queue) tell; with ``outputs``, the socket saw the whole successful run
        and those are its outputs. True when the lookups changed what was known of it (ended, started, gone)."""
        state = self.book.get(prompt_id)
        if state is None or state.settling:
            return False
        state.settling = True
        try:
            try:
                if outputs is not None:
                    outcome = protocol.HistoryOutcome(finished=True, succeeded=True, outputs=outputs)
                else:
                    outcome, queue = await backend.client.outcome(prompt_id, queue)
            except BackendUnavailable as exc:
                logger.debug("history lookup failed backend={} prompt={} error={}", backend.id, prompt_id, exc)
                return False
            if outcome.finished and outcome.succeeded:
                await self.outcomes.completed(backend, prompt_id, state, outcome.outputs)
            elif outcome.finished:
                await self.outcomes.failed(backend, prompt_id, state, outcome.error or "failed")
            elif queue is not None and protocol.prompt_running(queue, prompt_id) and not state.started:
                # its execution_start was lost (sent while the socket reconnected): /queue shows it running
                with contextlib.suppress(InvalidTransition, NotFound):
                    await self._mark_running(prompt_id, state)
            elif queue is not None and not protocol.prompt_in_queue(queue, prompt_id):
                self.book.close(backend, prompt_id, done=False)
                self.late.vanished(prompt_id, state.task_id, backend)
                await self.outcomes.requeue(state.task_id, AttemptEnd.VANISHED,
                                            f"{backend.id} has no record of prompt {prompt_id} (restarted?)",
                                            prompt_id=prompt_id)
            else:
                return False  # still queued or running, as the socket said
            return True
        finally:
            state.settling = False

    # ------------------------------------------------------------------ requests
    async def interrupt(self, task_id: str) -> bool:
        """ComfyUI's POST /interrupt for one task, when its prompt is the one its backend runs now (asked of the
        backend: a lost execution_start must not make it look queued); otherwise nothing happens. The backend is
        asked to interrupt it, and the task ends ``canceled`` when the backend reports the interruption (its
        frames until then, as from one ComfyUI), or after ``INTERRUPT_GRACE_S`` at the latest. Asked again while
        the backend is at it, it changes nothing."""
        with self._stopping(task_id):
            task = await self.store.get(task_id)
            state = self.book.get(task.prompt_id or "")
            if state is None or state.task_id != task_id or task.status not in (TaskStatus.PENDING,
                                                                                TaskStatus.RUNNING):
                return False
            if state.interrupt_by is not None:
                return True
            return await self._interrupt(state, task)

    async def _interrupt(self, state: PromptState, task: Task) -> bool:
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
        with self._stopping(task_id):
            return await self._cancel(task_id)

    async def _cancel(self, task_id: str) -> Task:
        await self.store.cancel(task_id)
        task = await self.store.get(task_id)  # read after the status change: a submission recorded before it shows
        state = self.book.get(task.prompt_id or "")
        if state is not None:
            state.relay = None  # its client heard the end already: no frame of it may follow
        if task.prompt_id and state is not None and state.task_id == task_id:
            await self.outcomes.stop_on_backend(state.backend, task.prompt_id)
            self.book.close(state.backend, task.prompt_id, done=False)
        logger.info("task canceled task={}", task_id)
        return task

    @contextlib.contextmanager
    def _stopping(self, task_id: str) -> Iterator[None]:
        """A request on this replica stops the task: the cancel follower leaves it to it."""
        self.stopping.add(task_id)
        try:
            yield
        finally:
            self.stopping.discard(task_id)

    def leading(self) -> bool:
        """Whether this replica's term is valid now: its tracker follows the backends (else the leader's does)."""
        return self.valid is None or self.valid()
