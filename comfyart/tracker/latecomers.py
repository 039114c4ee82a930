"""Late landings (issue 24): a prompt an old leader POSTs after it lost the lease.

Nothing fences a backend's queue: a leader that paused between its last validity check (``ensure_leading``) and
its POST /prompt can land the prompt seconds later, after the new leader's recovery found it in neither /history
nor /queue (``AttemptEnd.VANISHED``) and sent its task out again under a new prompt id: run as it is, the task
would run twice. So every vanished prompt id is watched for ``keep_s`` (the lease plus the submit timeout, the
longest an old leader's POST is under way when nothing pauses it, and at least ``LATE_WATCH_MIN_S``: a pause lasts
as long as it lasts; at most ``LATE_WATCH_MAX`` ids, the oldest forgotten first). When one shows up after all, in
a backend's /queue (a reconcile) or in a frame of the shared client id's socket (its execution_start, executing,
progress), it is taken off that backend: deleted from its queue, or interrupted if it runs. Its frames change
nothing meanwhile: the book no longer holds it, and the task store refuses to end an attempt that is not the
task's current one.

The decisions (``LateWatch``, ``late_in_queue``) are pure; ``LateGuard`` carries them out.
"""
from __future__ import annotations

import time
from collections.abc import Container
from dataclasses import dataclass
from typing import Any

from loguru import logger

from comfyart.comfy import protocol
from comfyart.errors import BackendUnavailable
from comfyart.pool.backend import Backend

LATE_WATCH_MIN_S = 600.0  # a leader paused between its last check and its POST may wake this late and still land
LATE_WATCH_MAX = 10_000  # vanished ids watched at once: a failover of a huge fleet does not grow it without end


@dataclass(frozen=True)
class Vanished:
    """A prompt found in neither /history nor /queue, whose task went out again: watched until ``until``."""

    task_id: str
    backend_id: str
    until: float  # monotonic


class LateWatch:
    """Vanished prompt ids, each for ``keep_s`` from when it vanished. ``now`` is the monotonic time."""

    def __init__(self, keep_s: float, most: int = LATE_WATCH_MAX) -> None:
        self.keep_s = keep_s
        self.most = most
        self._watched: dict[str, Vanished] = {}  # in the order they vanished

    def note(self, prompt_id: str, *, task_id: str, backend_id: str, now: float) -> None:
        self.prune(now)
        self._watched.pop(prompt_id, None)
        self._watched[prompt_id] = Vanished(task_id, backend_id, now + self.keep_s)
        while len(self._watched) > self.most:
            del self._watched[next(iter(self._watched))]

    def get(self, prompt_id: str, now: float) -> Vanished | None:
        """The watch on ``prompt_id``, while it lasts."""
        vanished = self._watched.get(prompt_id)
        if vanished is not None and now >= vanished.until:
            del self._watched[prompt_id]
            return None
        return vanished

    def forget(self, prompt_id: str) -> None:
        self._watched.pop(prompt_id, None)

    def prune(self, now: float) -> None:
        for prompt_id in [p for p, v in self._watched.items() if now >= v.until]:
            del self._watched[prompt_id]

    def watched(self, now: float) -> list[str]:
        self.prune(now)
        return list(self._watched)


def late_in_queue(queue: dict[str, Any], watch: LateWatch, book: Container[str], now: float) -> list[str]:
    """The watched prompts that ``queue`` (a backend's /queue) holds, running or pending, and that the book does not
    (an id the book holds again is an attempt it follows, never a late one): queued ones first, as interrupting
    first would start the next of them."""
    late = [p for p in watch.watched(now) if p not in book]
    queued = sorted(p for p in late if protocol.prompt_in_queue(queue, p) and not protocol.prompt_running(queue, p))
    return queued + [p for p in late if protocol.prompt_running(queue, p)]


def late_frame(prompt_id: str | None, watch: LateWatch, book: Container[str], now: float) -> Vanished | None:
    """The watch on the prompt a frame is about, when the book does not hold it: it landed late."""
    if prompt_id is None or prompt_id in book:
        return None
    return watch.get(prompt_id, now)


class LateGuard:
    """Takes late landings off their backend (see the module docstring)."""

    def __init__(self, keep_s: float, book: Container[str]) -> None:
        self.watch = LateWatch(keep_s)
        self.book = book
        self.stopped = 0  # late prompts taken off a backend, since start

    def vanished(self, prompt_id: str, task_id: str, backend: Backend) -> None:
        self.watch.note(prompt_id, task_id=task_id, backend_id=backend.id, now=time.monotonic())

    def expects(self) -> bool:
        """Whether any prompt is watched: a reconcile then reads /queue even for a backend with none of ours."""
        return bool(self.watch.watched(time.monotonic()))

    async def on_frame(self, backend: Backend, prompt_id: str | None) -> None:
        vanished = late_frame(prompt_id, self.watch, self.book, time.monotonic())
        if vanished is not None and prompt_id is not None:
            await self._stop(backend, prompt_id, vanished, "its frames")

    async def on_queue(self, backend: Backend, queue: dict[str, Any]) -> None:
        for prompt_id in late_in_queue(queue, self.watch, self.book, time.monotonic()):
            vanished = self.watch.get(prompt_id, time.monotonic())
            if vanished is not None:
                await self._stop(backend, prompt_id, vanished, "its /queue")

    async def _stop(self, backend: Backend, prompt_id: str, vanished: Vanished, seen_in: str) -> None:
        """Delete it from the backend's queue, or interrupt it; watched on while the backend cannot be reached."""
        try:
            running = await backend.client.withdraw(prompt_id)
        except BackendUnavailable as exc:
            logger.warning("late prompt not stopped yet backend={} prompt={} error={}", backend.id, prompt_id, exc)
            return
        self.watch.forget(prompt_id)
        self.stopped += 1
        logger.warning("late prompt of an earlier leader {} backend={} prompt={} task={} (seen in {}; vanished "
                       "from {}, its task went out again)", "interrupted" if running else "taken off the queue",
                       backend.id, prompt_id, vanished.task_id, seen_in, vanished.backend_id)
