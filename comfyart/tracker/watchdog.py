"""The tracker's watchdog, per prompt in the book: past ``task_timeout_s`` it is ended and retried; silent for
``silence_s`` it is looked up in /history (a socket can miss events, or belong to a backend that restarted and
forgot the prompt); interrupted at a client's request and not reported so within the grace, it is canceled."""
from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from comfyart.errors import InvalidTransition, NotFound, TransientError
from comfyart.policy.attempts import AttemptEnd
from comfyart.tracker.prompts import PromptState

if TYPE_CHECKING:  # the tracker runs the watchdog in its term and is all it works on
    from comfyart.tracker.tracker import Tracker

WATCHDOG_TICK_S = 0.5


async def watch_prompts(tracker: Tracker) -> None:
    """The watchdog's loop; each check in a task of its own, one at a time per prompt."""
    async with asyncio.TaskGroup() as checks:
        busy: set[str] = set()
        while True:
            await asyncio.sleep(WATCHDOG_TICK_S)
            now = time.monotonic()
            for prompt_id, state in tracker.book.items():
                if prompt_id in busy or not state.submitted or state.settling:
                    continue
                check: Coroutine[Any, Any, Any]
                if state.interrupt_by is not None and now >= state.interrupt_by:
                    check = _cancel_quietly(tracker, state.task_id)
                elif now - state.since >= tracker.config.task_timeout_s:
                    check = _time_out(tracker, prompt_id, state)
                elif now - state.last_seen >= tracker.config.silence_s:
                    state.last_seen = now
                    check = tracker.settle(state.backend, prompt_id)
                else:
                    continue
                busy.add(prompt_id)
                task = checks.create_task(check, name=f"watchdog {prompt_id}")
                task.add_done_callback(functools.partial(_discard, busy, prompt_id))


async def _cancel_quietly(tracker: Tracker, task_id: str) -> None:
    with contextlib.suppress(InvalidTransition, NotFound, TransientError):
        await tracker.cancel(task_id)


async def _time_out(tracker: Tracker, prompt_id: str, state: PromptState) -> None:
    backend = state.backend
    if not tracker.book.holds(prompt_id, state):
        return
    running = await tracker.outcomes.stop_on_backend(backend, prompt_id)
    if running:
        backend.stuck_prompt = prompt_id  # unhealthy while it still holds it: a hung node ignores /interrupt
    tracker.book.close(backend, prompt_id, done=False)
    await tracker.outcomes.requeue(state.task_id, AttemptEnd.TIMED_OUT,
                                   f"no result from {backend.id} within task_timeout "
                                   f"({tracker.config.task_timeout_s:g} s)", prompt_id=prompt_id)


def _discard(busy: set[str], prompt_id: str, _: object) -> None:
    busy.discard(prompt_id)
