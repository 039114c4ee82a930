"""Cancels made on any replica (issue 24). A user's cancel is a user write (unfenced) and goes through on whichever
replica took the request: REST and ComfyUI cancels end the task ``canceled``, a v2 cancel of a running job marks it
``cancel_asked_ms`` (``canceling``). Only the leader holds the prompt's book entry and talks to its backend, so its
tracker follows the task events of every replica's writes (the event bridge publishes them all on its hub) and
acts on the cancels it did not make itself:

- canceled, its prompt in the book: taken off its backend (deleted from the queue, or interrupted) and its slot freed;
- cancel asked of a running job, its prompt in the book: interrupted on its backend, and canceled once the backend
  reports the interruption (``Tracker.interrupt``), or at once when the backend does not run it.

"Subscribe, then read": after each (re)subscription the book's tasks are read again, so a cancel committed before
the subscription (at the term's start, or while the subscriber lagged) is acted on too. A cancel the leader made
itself (a request on this replica) is left to the request (``Tracker.stopping``). Only in a replicated store: in one
process every cancel is a request on the leader. A task canceled while no replica led and whose attempt was
recorded but never re-attached (final tasks are not recovered) runs out on its backend; its end is refused.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from loguru import logger

from comfyart.bus import Event
from comfyart.errors import InvalidTransition, NotFound, TransientError
from comfyart.models import TaskStatus
from comfyart.tracker.prompts import PromptBook, PromptState

if TYPE_CHECKING:  # the tracker runs the follower in its term and carries its actions out
    from comfyart.tracker.tracker import Tracker


@dataclass(frozen=True)
class StopPrompt:
    """The task was canceled: its prompt off its backend, its slot freed."""


@dataclass(frozen=True)
class InterruptPrompt:
    """A running job's cancel was asked: interrupt it, canceled once its backend says so."""


CancelAction = StopPrompt | InterruptPrompt


def cancel_action(status: str, cancel_asked: bool, state: PromptState | None, *, busy: bool) -> CancelAction | None:
    """What the leader does for a task now ``status`` (``cancel_asked``: a cancel was asked of it), whose prompt
    has ``state`` in the book (None: not in flight here); ``busy``: a request on this replica is stopping it."""
    if state is None or busy:
        return None
    if status == TaskStatus.CANCELED.value:
        return StopPrompt()
    if cancel_asked and status == TaskStatus.RUNNING.value and state.interrupt_by is None:
        return InterruptPrompt()
    return None


def is_cancel(event: Event) -> bool:
    return event.get("type") == "task" and (event.get("status") == TaskStatus.CANCELED.value
                                            or event.get("cancel_asked_ms") is not None)


def entry_of(book: PromptBook, task_id: str) -> tuple[str, PromptState] | None:
    """The book's entry of ``task_id`` (a scan: cancels are rare, the book is a backend's slots)."""
    return next(((p, s) for p, s in book.items() if s.task_id == task_id), None)


class CancelFollower:
    """The leader's side of cancels made anywhere (see the module docstring); ``run`` is a loop of its term."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker

    async def run(self) -> None:
        hub = self.tracker.store.events
        while True:  # a subscription cut (lagged) ends its loop: subscribe and read again
            with hub.subscribe(is_cancel) as events:
                await self._catch_up()
                async for event in events:
                    if event.get("type") == "task":
                        await self.react(str(event["id"]), str(event["status"]),
                                         event.get("cancel_asked_ms") is not None)

    async def _catch_up(self) -> None:
        """Every task in the book, as Redis has it now."""
        task_ids = sorted({state.task_id for _, state in self.tracker.book.items()})
        try:
            records = await self.tracker.store.get_many(task_ids) if task_ids else []
        except TransientError as exc:
            logger.warning("cancels not read again error={}", exc)  # the events still come
            return
        for task in records:
            if task is not None:
                await self.react(task.id, task.status.value, task.cancel_asked_ms is not None)

    async def react(self, task_id: str, status: str, cancel_asked: bool) -> None:
        tracker = self.tracker
        entry = entry_of(tracker.book, task_id)
        prompt_id, state = entry if entry is not None else ("", None)
        action = cancel_action(status, cancel_asked, state, busy=task_id in tracker.stopping)
        if action is None or state is None:
            return
        try:
            if isinstance(action, StopPrompt):
                state.relay = None  # its client heard the end already: no frame of it may follow
                await tracker.outcomes.stop_on_backend(state.backend, prompt_id)
                tracker.book.close(state.backend, prompt_id, done=False)
                logger.info("task canceled elsewhere, prompt stopped task={} backend={} prompt={}", task_id,
                            state.backend.id, prompt_id)
            elif not await tracker.interrupt(task_id):  # not running there: nothing to wait for
                with contextlib.suppress(InvalidTransition, NotFound):
                    await tracker.cancel(task_id)
        except (InvalidTransition, NotFound):
            pass  # it ended meanwhile
        except TransientError as exc:
            logger.warning("cancel not carried out task={} error={}", task_id, exc)
