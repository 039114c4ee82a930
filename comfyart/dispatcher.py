"""Takes tasks from the Redis queue and submits each prompt to the backend the scheduling strategy picks.

Each round reads the head of the queue (an id per free slot, plus ``scheduler.lookahead``) and the backends, and
``policy.scheduling.assign`` pairs them; the pairs are claimed and submitted. comfyart mints every prompt id and
records it before POST /prompt, so an answer lost on the way is settled by looking the prompt up in /history and
/queue, never by submitting blindly again. A claim holds a lease: a task whose dispatch broke off half-way (Redis
gone for a moment) returns to the queue when the lease ends.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Container, Sequence
from typing import Any

from loguru import logger

from comfyart.clock import now_ms
from comfyart.comfy import protocol
from comfyart.config.sections import SchedulerConfig
from comfyart.errors import (
    BackendUnavailable,
    InvalidInput,
    InvalidTransition,
    NotFound,
    PromptRejected,
    TransientError,
)
from comfyart.files.cache import FileUnreachable
from comfyart.files.inputs import open_sized
from comfyart.models import Task, TaskStatus, relay_of
from comfyart.policy.attempts import AfterUncertainSubmit, AttemptEnd, after_uncertain_submit
from comfyart.policy.deferral import Deferrals
from comfyart.policy.inventory import Combo, lacking_reason
from comfyart.policy.needs import Needs
from comfyart.policy.scheduling import (
    QueuedTask,
    assign,
    blocked_reason,
    free_prompt_slots,
    ordered,
    skipped_by,
    window_size,
)
from comfyart.pool.backend import Backend
from comfyart.pool.inventory import Inventories
from comfyart.pool.registry import Pool
from comfyart.store.fence import ensure_leading
from comfyart.store.pool import PoolStore
from comfyart.store.queue import Submission, TaskQueue
from comfyart.store.redis import cancelled_meanwhile
from comfyart.store.tasks import TaskStore
from comfyart.tracker.outcomes import Outcomes
from comfyart.tracker.prompts import PromptBook, PromptState
from comfyart.workflows.resolve import PreparedPrompt, Resolver

IDLE_WAIT_S = 1.0  # with nothing to do, look again this often even unwoken (a task queued by another process)
BLOCKED_CHECK_S = 1.0
ASKS_NOTHING = Needs()


class Dispatcher:
    def __init__(self, *, store: TaskStore, queue: TaskQueue, pool: Pool, book: PromptBook, outcomes: Outcomes,
                 resolver: Resolver, config: SchedulerConfig, client_id: str, upload_timeout_s: float = 300.0,
                 claim_lease_s: float = 30.0, pool_store: PoolStore | None = None,
                 inventories: Inventories | None = None, recovered: asyncio.Event | None = None,
                 valid: Callable[[], bool] | None = None) -> None:
        self.store = store
        self.queue = queue
        self.pool = pool
        self.book = book
        self.outcomes = outcomes
        self.resolver = resolver
        self.config = config  # as configured; ``settings`` adds the run-time changes
        self.settings = config
        self.overrides: dict[str, Any] = {}
        self.client_id = client_id  # the tracker's: the backends send that client the events of our prompts
        self.upload_timeout_s = upload_timeout_s
        self.claim_lease_s = claim_lease_s
        self.pool_store = pool_store
        self.inventories = inventories or Inventories(pool, pool.config)  # read again when a backend lacks a need
        self.wake = asyncio.Event()  # a task queued, or a slot freed
        # the tracker's recovery of the term is done: before, a claim could race its requeue of the same tasks
        self.recovered = recovered
        self.valid = valid  # the leadership's term still valid: checked right before each POST /prompt
        queue.wakeups.append(self.wake)
        pool.wakeups.append(self.wake)
        self.counters = Counter({"dispatched": 0, "same_models": 0, "model_changes": 0})
        self.blocked: dict[str, str] = {}  # queued task id -> why no backend in the pool could ever run it
        # the window's tasks, read once: a queued task's record and needs never change until it is claimed (a
        # cancel meanwhile is caught by record_submission)
        self._queued: dict[str, tuple[QueuedTask, Task]] = {}
        self._skips: Counter[str] = Counter()
        self.deferred = Deferrals()  # tasks whose input file's replica did not answer: tried again later
        self._seq = 0
        self._next_blocked_check = 0.0

    # ------------------------------------------------------------------ settings
    async def load_overrides(self) -> None:
        """The run-time settings kept in Redis, read afresh: a setting not there is back to its configured value."""
        if self.pool_store is not None:
            stored = await self.pool_store.scheduler_override()
            self.overrides = {}
            await self.apply({k: v for k, v in stored.items() if k in SchedulerConfig.model_fields}, persist=False)

    async def apply(self, changes: dict[str, Any], *, persist: bool = True) -> SchedulerConfig:
        """PUT /api/scheduler: change settings at run time (None: back to the configured value). Raises
        pydantic's ValidationError for a bad value; kept in Redis across restarts."""
        overrides = {k: v for k, v in {**self.overrides, **changes}.items() if v is not None}
        settings = SchedulerConfig.model_validate({**self.config.model_dump(), **overrides})
        if persist and self.pool_store is not None:
            as_json = settings.model_dump(mode="json")
            await self.pool_store.set_scheduler_override({k: as_json[k] for k in overrides})
        self.settings, self.overrides = settings, overrides
        self.queue.ageing_s = settings.priority_ageing_s
        self._skips.clear()
        self.wake.set()
        return settings

    def describe(self) -> dict[str, Any]:
        return {**self.settings.model_dump(mode="json"), "overridden": sorted(self.overrides),
                "counters": dict(self.counters),
                "blocked": [{"task": task_id, "reason": reason} for task_id, reason in self.blocked.items()]}

    # ------------------------------------------------------------------ loop
    async def run(self) -> None:
        """Dispatch for one leader's term, from a fresh start (the window, skips and blocked tasks of an earlier
        term forgotten, the scheduler's run-time settings read again), once the pool is ready and the tracker has
        recovered what was in flight."""
        self._queued, self._skips, self.blocked, self._next_blocked_check = {}, Counter(), {}, 0.0
        self.deferred = Deferrals()
        try:
            await self.load_overrides()
        except TransientError as exc:  # the settings read at start-up (or last term) stay
            logger.warning("scheduler settings not read again error={}", exc)
        await self.pool.ready.wait()
        if self.recovered is not None:
            await self.recovered.wait()
        next_lease_check = 0.0
        async with asyncio.TaskGroup() as submissions:
            while True:
                cancelled_meanwhile()  # ends with its term even if a Redis call swallowed the cancel
                try:
                    if time.monotonic() >= next_lease_check:
                        next_lease_check = time.monotonic() + self.claim_lease_s / 4
                        for task_id in await self.queue.return_expired_claims():
                            logger.warning("claim expired, task back in the queue task={}", task_id)
                    self.wake.clear()
                    if not await self.round(submissions):
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(IDLE_WAIT_S):
                                await self.wake.wait()
                except TransientError as exc:
                    logger.warning("dispatch paused error={}", exc)
                    await asyncio.sleep(exc.retry_after_s)

    async def round(self, submissions: asyncio.TaskGroup) -> bool:
        """Pair the head of the queue with free slots and submit; False when nothing could be dispatched."""
        settings = self.settings
        # only the backends with a free slot, and the pool's kept answer to which could ever run a task: a round
        # costs the same with 1,000 busy backends as with 10
        slots = self.pool.open_slots(1 + settings.prefetch)
        free = free_prompt_slots(slots, settings.prefetch)
        if not free and time.monotonic() < self._next_blocked_check:
            return False
        ids, waiting = await self.queue.peek(max(1, window_size(slots, settings.prefetch, settings.lookahead)))
        if not ids:
            self._note_blocked([], [], [])  # none waits any more
            return False
        window = await self._window(ids)
        if not free:  # nothing can be dispatched, but the autoscaler must know what waits blocked (an empty pool)
            self._note_blocked(window, self.pool.slots(), [])
            return False
        pairs = assign(window, slots, strategy=settings.strategy, prefetch=settings.prefetch, waiting=waiting,
                       affinity_max_skips=settings.affinity_max_skips, view=self.pool.view())
        # that check looks at every backend, once a second: their slots only then
        due = time.monotonic() >= self._next_blocked_check
        self._note_blocked(window, self.pool.slots() if due else [], pairs)
        for task_id in skipped_by(window, pairs):
            self._skips[task_id] += 1
        placed = [(task_id, self.pool.backends[backend_id]) for task_id, backend_id in pairs
                  if backend_id in self.pool.backends]
        # one round trip claims them all, one more records them all: a busy loop makes every await cost a lap
        claimed = await self.queue.claim_ids([task_id for task_id, _ in placed], self.claim_lease_s)
        ready = []
        for (task_id, backend), ok in zip(placed, claimed, strict=True):
            queued, task = self._queued.pop(task_id)
            self._skips.pop(task_id, None)
            if ok:
                ready.append((task, backend, queued))
        await self.dispatch(ready, submissions)
        return bool(pairs)

    async def _window(self, ids: Sequence[str]) -> list[QueuedTask]:
        missing = [task_id for task_id in ids if task_id not in self._queued]
        if missing:
            tasks = await self.store.get_many(missing)
            combos: Container[Combo] = ()
            if any(task is not None and task.needs is None for task in tasks):  # queued before any inventory
                merged = await self.inventories.merged()
                combos = merged.combos if merged is not None else ()
            for task_id, task in zip(missing, tasks, strict=True):
                if task is None:
                    continue
                failed_on = frozenset(attempt.backend for attempt in task.history)
                needs, cost = await self.resolver.needs(task, combos)
                self._queued[task_id] = (QueuedTask(task_id, task.priority, needs, failed_on,
                                                    created_ms=task.created_ms, cost=cost), task)
        if len(self._queued) > 4 * len(ids) + 64:  # canceled while queued: forget what left the window
            keep = set(ids)
            self._queued = {k: v for k, v in self._queued.items() if k in keep}
            self._skips = Counter({k: v for k, v in self._skips.items() if k in keep})
        window = []
        now = time.monotonic()
        for task_id in ids:
            queued, _ = self._queued.get(task_id, (None, None))
            if queued is not None and self.deferred.due(task_id, now):
                skips = self._skips.get(task_id, 0)
                window.append(queued if not skips else dataclasses.replace(queued, skips=skips))
        return ordered(window, self.settings.order, now_ms(), self.settings.priority_ageing_s)

    def _note_blocked(self, window: list[QueuedTask], slots: list[Any], pairs: list[tuple[str, str]]) -> None:
        """Once a second: which tasks of the window no healthy backend that takes work could run, and why. A task
        placed in any round leaves the list at once."""
        placed = {task_id for task_id, _ in pairs}
        if time.monotonic() < self._next_blocked_check:
            if self.blocked and not placed.isdisjoint(self.blocked):
                self.blocked = {k: v for k, v in self.blocked.items() if k not in placed}
            return
        self._next_blocked_check = time.monotonic() + BLOCKED_CHECK_S
        reasons: dict[Needs, str | None] = {}  # most tasks of a window share their needs
        blocked = {}
        blocked_needs: Counter[Needs] = Counter()
        for task in window:
            needs = task.needs
            if task.id not in placed and (needs.tags or needs.vram is not None or needs.of_inventory):
                if needs not in reasons:
                    reasons[needs] = blocked_reason(needs, slots)
                reason = reasons[needs]
                if reason is not None:
                    blocked[task.id] = reason
                    blocked_needs[needs] += 1
        for task_id in blocked.keys() - self.blocked.keys():
            logger.warning("task cannot run on any backend now task={} reason={}", task_id, blocked[task_id])
        self.blocked = blocked
        self.pool.note_blocked(dict(blocked_needs))  # the autoscaler starts a container that can run them

    async def dispatch(self, claimed: list[tuple[Task, Backend, QueuedTask]], submissions: asyncio.TaskGroup) -> None:
        """Record the claimed tasks' submissions, then POST each in a task of its own so a slow backend delays no
        other."""
        prepared_list: list[tuple[Task, Backend, QueuedTask, PreparedPrompt]] = []
        for (task, backend, queued), prepared in zip(
                claimed, await self.resolver.prepare_many([task for task, _, _ in claimed]), strict=True):
            if isinstance(prepared, InvalidInput) or isinstance(prepared, FileUnreachable) and not self.deferred.defer(
                    task.id, time.monotonic(), random.random()):
                await self._unrunnable(task.id, str(prepared))
                continue
            if isinstance(prepared, FileUnreachable):  # its replica may come back: tried again later, others go on
                logger.warning("task waits for its input file task={} error={}", task.id, prepared)
                await self.queue.requeue(task.id)
                continue
            self.deferred.forget(task.id)
            if self.pool.backends.get(backend.id) is not backend or not backend.accepting:
                await self.queue.requeue(task.id)  # lost or drained since the round began
                continue
            prepared_list.append((task, backend, queued, prepared))
        records = [Submission(task.id, backend.id, str(uuid.uuid4()), task.attempts + 1,
                              prepared.graph if task.workflow else None)
                   for task, backend, _, prepared in prepared_list]
        refusals = await self.queue.record_submissions(records)
        for (task, backend, queued, prepared), record, refusal in zip(prepared_list, records, refusals, strict=True):
            if refusal is not None:
                logger.info("not submitted task={} reason={}", task.id, refusal)  # canceled, or its lease ran out
                continue
            self._seq += 1
            backend.last_dispatch = self._seq
            self.counters["dispatched"] += 1
            models = queued.needs.models
            if models:
                self.counters["same_models" if backend.models == models else "model_changes"] += 1
                backend.models = models
            state = self.book.open(backend, record.prompt_id, task.id, prepared.graph, cost=queued.cost,
                                   relay=relay_of(task))
            submissions.create_task(self._submit(backend, record.prompt_id, state, prepared, queued.needs),
                                    name=f"submit {task.id}")

    async def _unrunnable(self, task_id: str, error: str, *, prompt_id: str | None = None) -> None:
        """The task fails: its inputs cannot be run. With ``prompt_id``, only if that is still its attempt (the
        task's claim was released when the attempt was recorded)."""
        expect = ("prompt_id", prompt_id) if prompt_id else None
        with contextlib.suppress(InvalidTransition, NotFound):
            await self.store.update(task_id, to=TaskStatus.FAILED, expect=expect, finished_ms=now_ms(), error=error)
        if prompt_id is None:
            await self.queue.release_claim(task_id)
        logger.info("task cannot run task={} error={}", task_id, error)

    async def _submit(self, backend: Backend, prompt_id: str, state: PromptState, prepared: PreparedPrompt,
                      needs: Needs = ASKS_NOTHING) -> None:
        try:
            await self._upload(backend, prepared)
        except BackendUnavailable as exc:
            # nothing was posted yet: the prompt certainly is not on this backend
            self.book.close(backend, prompt_id, done=False)
            await self.outcomes.requeue(state.task_id, AttemptEnd.NOT_ACCEPTED,
                                        f"could not upload an input to {backend.id}: {exc}", prompt_id=prompt_id)
            return
        except InvalidInput as exc:
            if not self.book.holds(prompt_id, state):
                return  # given up (its backend out of reach) or canceled during the upload: the task moved on
            self.book.close(backend, prompt_id, done=False)
            await self._unrunnable(state.task_id, str(exc), prompt_id=prompt_id)
            return
        if not self.book.holds(prompt_id, state):
            return  # canceled while its inputs were uploading
        ensure_leading(self.valid, f"POST /prompt of task {state.task_id}")  # nothing fences a backend's queue
        try:
            await backend.client.submit(prepared.graph, client_id=self.client_id, prompt_id=prompt_id,
                                        extra_data=prepared.extra_data, targets=prepared.targets)
        except PromptRejected as exc:
            await self._rejected(backend, prompt_id, state, exc, needs)
            return
        except BackendUnavailable as exc:
            await self._uncertain(backend, prompt_id, state, exc)
            return
        state.submitted = True
        if not self.book.holds(prompt_id, state):
            await self.outcomes.stop_on_backend(backend, prompt_id)  # canceled while POST /prompt was on its way
            return
        logger.debug("submitted task={} backend={} prompt={}", state.task_id, backend.id, prompt_id)

    async def _upload(self, backend: Backend, prepared: PreparedPrompt) -> None:
        """Put each input file on the backend just before the prompt, so any backend can run any task. An open
        file stays readable if its blob is removed meanwhile."""
        for upload in prepared.uploads:
            try:
                file, size = await asyncio.to_thread(open_sized, upload.path)
            except OSError as exc:
                raise InvalidInput(f"params.{upload.param}: cannot read {upload.path.name}: {exc.strerror}") from exc
            try:  # streamed from the file: a 1 GiB asset costs a chunk of memory per delivery, not 1 GiB
                stored = await backend.client.upload_image(file, size=size, name=upload.name,
                                                           content_type=upload.content_type,
                                                           timeout_s=self.upload_timeout_s)
            finally:
                await asyncio.to_thread(file.close)
            if stored != upload.name:
                raise BackendUnavailable(f"stored {upload.name} as {stored} despite overwrite")

    async def _rejected(self, backend: Backend, prompt_id: str, state: PromptState, exc: PromptRejected,
                        needs: Needs) -> None:
        """The backend refused the prompt at validation. It was given the task because its inventory had all the
        task needs: that is read again, and if the backend lacks something after all (a model removed behind
        comfyart's back), the task goes back to the queue for a backend that has it, as an attempt. It fails when
        the backend still lists everything (the graph itself is at fault), or when no backend has what it lacks."""
        lacking: tuple[str, ...] = ()
        if needs.of_inventory:
            inventory = await self.inventories.read(backend) or backend.inventory
            lacking = inventory.missing(needs) if inventory is not None else ()
        error = f"rejected by ComfyUI: {exc}"
        if lacking:
            nowhere = self.inventories.unrunnable_reason(needs)
            if nowhere is None:
                self.book.close(backend, prompt_id, done=False)
                await self.outcomes.requeue(state.task_id, AttemptEnd.STALE_INVENTORY,
                                            f"{backend.id} {lacking_reason(lacking)} after all: {error}",
                                            prompt_id=prompt_id)
                return
            error = f"no backend can run it: {nowhere} ({error} on {backend.id})"
        with contextlib.suppress(InvalidTransition, NotFound):  # unless the task moved on (its backend was lost)
            await self.store.update(state.task_id, to=TaskStatus.FAILED, expect=("prompt_id", prompt_id),
                                    finished_ms=now_ms(), error=error, node_errors=exc.node_errors)
        self.book.close(backend, prompt_id, done=True)
        logger.info("task rejected task={} backend={} error={}", state.task_id, backend.id, exc)

    async def _uncertain(self, backend: Backend, prompt_id: str, state: PromptState, exc: BackendUnavailable) -> None:
        """The answer to POST /prompt was lost: the backend decides, through /history and /queue."""
        try:
            in_history = await backend.client.history(prompt_id) is not None
            in_queue = protocol.prompt_in_queue(await backend.client.queue(), prompt_id)
        except BackendUnavailable:
            # cannot tell yet: keep the slot; reconciliation looks again, and a lost backend requeues it
            state.submitted = True
            if not self.book.holds(prompt_id, state):  # given up meanwhile: should it land, it is taken back
                backend.given_up.add(prompt_id)
            logger.warning("submission uncertain task={} backend={} error={}", state.task_id, backend.id, exc)
            return
        if after_uncertain_submit(in_history=in_history, in_queue=in_queue) is AfterUncertainSubmit.TRACK:
            state.submitted = True
            if not self.book.holds(prompt_id, state):  # given up meanwhile (its backend was out of reach)
                await self.outcomes.stop_on_backend(backend, prompt_id)
            return
        self.book.close(backend, prompt_id, done=False)
        await self.outcomes.requeue(state.task_id, AttemptEnd.NOT_ACCEPTED,
                                    f"{backend.id} did not take the prompt: {exc}", prompt_id=prompt_id)

