"""The leader's terms: while this replica leads, the loops that must be single (pool, dispatcher, tracker, webhook
sender, stats sampler, v2 retention) run; when it stops leading they stop, and they start again, fresh, at its next
term.

``LeaderTerms.run`` waits for ``Leadership.acquired()``; a term then resets the leader's in-process state
(``reset``), and runs every leader loop in one TaskGroup, created in a copied context where the fence variable
(``store.fence.FENCE``) holds the term's fence, so every Redis write of those loops, and of every task they create,
carries the term's epoch. The term ends when the leadership says so (``term.lost``), when a loop raises
``errors.Fenced`` or the fence trips (a write was refused: another replica leads; ``step_down("fenced")``), or on
``stop()`` (SIGTERM: the daemon then releases the lease). Its loops are cancelled and awaited, the state is reset
again, and it waits for the next term. Any other exception of a leader loop, and a leader loop that returns, fail
``run`` (the daemon stops, as when a root task fails).

The daemon runs it over ``cluster.leadership.Leadership`` (its ``Term`` is the ``LeaderTerm`` here) with the fence
bound to ``store.fence`` (``FenceBinding(FENCE, Fence)``); a process alone on its Redis takes the lease at its first
try, so it leads at once, as before replicas.
"""
from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from loguru import logger

from comfyart.errors import Fenced
from comfyart.store.redis import until_it_ends

Loop = Callable[[], Awaitable[None]]


class LeaderTerm(Protocol):
    """One term of leadership (``cluster.leadership.Term``)."""

    epoch: int
    since_ms: int
    lost: asyncio.Event  # set when the term ends
    reason: str | None


class Leading(Protocol):
    """What the terms need of the leadership (``cluster.leadership.Leadership``)."""

    @property
    def term(self) -> LeaderTerm | None: ...

    def valid(self) -> bool: ...

    async def acquired(self) -> LeaderTerm: ...

    def step_down(self, reason: str) -> None: ...

    def wake(self) -> None: ...

    async def release(self) -> None: ...

    async def run(self) -> None: ...


@dataclass(frozen=True)
class FenceBinding:
    """How the term's epoch reaches the store: ``var`` (``store.fence.FENCE``) is set, in the context the term's
    loops are created in, to ``make(epoch, tripped)`` (``store.fence.Fence``); the store sets ``tripped`` when it
    refuses a write of that epoch."""

    var: contextvars.ContextVar[Any]
    make: Callable[[int, asyncio.Event], Any]


class LeaderLoopExited(Exception):
    """A leader loop returned although it should run until its term ends."""


class _Set(Exception):
    """Ends a wait for the first of several things (``_first_set``, ``_next_term``)."""


class LeaderTerms:
    def __init__(self, leadership: Leading, loops: Mapping[str, Loop], *,
                 reset: Callable[[], Awaitable[None]] | None = None, fence: FenceBinding | None = None) -> None:
        self.leadership = leadership
        self.loops = dict(loops)
        self.reset = reset  # the leader's in-process state made fresh: at each term's start and end
        self.fence = fence  # None: the loops' writes carry no epoch (a process alone on its Redis)
        self.current: LeaderTerm | None = None  # the term being led
        self.led = 0  # terms led since the process started
        self._stopping = asyncio.Event()
        self._idle = asyncio.Event()  # no term running
        self._idle.set()

    def leading(self) -> bool:
        return self.current is not None

    async def run(self) -> None:
        """Lead each term the leadership grants, until ``stop()``; returns then."""
        while True:
            term = await self._next_term()
            if term is None or self._stopping.is_set():
                return
            await self._lead(term)

    async def stop(self) -> None:
        """End the term being led (its loops cancelled and awaited, its state reset) and lead no more: the first
        step of a SIGTERM, before the lease is released."""
        self._stopping.set()
        await self._idle.wait()

    async def _next_term(self) -> LeaderTerm | None:
        """The next term, or None once stopping."""
        term: LeaderTerm | None = None

        async def acquire() -> None:
            nonlocal term
            term = await self.leadership.acquired()
            raise _Set("acquired")

        await _first_set({"stopping": self._stopping}, acquire())
        return None if self._stopping.is_set() else term

    async def _lead(self, term: LeaderTerm) -> None:
        self._idle.clear()  # no await since run() looked at _stopping: stop() waits for this term
        tripped = asyncio.Event()
        context = contextvars.copy_context()
        if self.fence is not None:
            context.run(self.fence.var.set, self.fence.make(term.epoch, tripped))
        self.current, self.led = term, self.led + 1
        logger.info("term started epoch={}", term.epoch)
        reason = "failed"
        try:
            # a task of its own, in the fenced context: every task its loops create inherits the fence
            reason = await asyncio.get_running_loop().create_task(self._term(term, tripped),
                                                                  name=f"term {term.epoch}", context=context)
        finally:
            self.current = None
            # the term's fence trips as it ends: a task of it that outlives it (a cancel swallowed in a Redis call)
            # passes no ``ensure_leading`` more, even once this replica leads again under a newer epoch
            tripped.set()
            try:
                if self.reset is not None:
                    await self.reset()
            finally:
                self._idle.set()
                logger.info("term ended epoch={} reason={}", term.epoch, reason)
        if reason == "fenced":
            self.leadership.step_down("fenced")

    async def _term(self, term: LeaderTerm, tripped: asyncio.Event) -> str:
        """Run the leader loops until the term is over; returns why it ended."""
        if self.reset is not None:
            await self.reset()
        reason = "failed"
        try:
            async with asyncio.TaskGroup() as loops:
                for name, loop in self.loops.items():
                    loops.create_task(_leader_loop(name, loop), name=name)
                loops.create_task(_over(term, tripped, self._stopping), name=f"term {term.epoch} end")
        except* _TermOver as over:
            reason = str(over.exceptions[0])
        except* Fenced as fenced:
            logger.warning("leader write refused epoch={} error={}", term.epoch, fenced.exceptions[0])
            reason = "fenced"
        return reason


class _TermOver(Exception):
    """Raised in a term's TaskGroup to end it (its message: why)."""


async def _leader_loop(name: str, loop: Loop) -> None:
    """A leader loop, ended for good when the term cancels it (``until_it_ends``: a loop that went on would wait
    for a pool a finished term never readies, holding the term and the daemon's stop)."""
    await until_it_ends(f"leader loop {name}", loop())
    raise LeaderLoopExited(f"{name} stopped on its own")


async def _over(term: LeaderTerm, tripped: asyncio.Event, stopping: asyncio.Event) -> None:
    """Wait until the term is over and raise ``_TermOver`` with why."""
    ended = await _first_set({"stopping": stopping, "fenced": tripped, "lost": term.lost})
    raise _TermOver((term.reason or "lost") if ended == "lost" else ended)


async def _first_set(events: Mapping[str, asyncio.Event], *others: Awaitable[None]) -> str | None:
    """Wait until one of ``events`` is set, or one of ``others`` raises ``_Set``; the name of the first of
    ``events`` set then (in their order), None if none is."""

    async def waiter(event: asyncio.Event) -> None:
        await event.wait()
        raise _Set

    async def other(awaitable: Awaitable[None]) -> None:
        await awaitable

    try:
        async with asyncio.TaskGroup() as waits:
            for name, event in events.items():
                waits.create_task(waiter(event), name=f"wait {name}")
            for awaitable in others:
                waits.create_task(other(awaitable), name="wait")
    except* _Set:
        pass
    return next((name for name, event in events.items() if event.is_set()), None)

