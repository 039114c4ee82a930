"""Stand-ins for what other parts of issue 24 build, driven by the test: ``StandInLeadership`` has the methods of
``cluster.leadership.Leadership`` (the test grants and revokes its terms), and ``FENCE``/``Fence`` stand for
``store.fence.FENCE`` and ``store.fence.Fence``."""
from __future__ import annotations

import asyncio
import contextvars
from dataclasses import dataclass

from comfyart.clock import now_ms
from comfyart.cluster.leadership import Term
from comfyart.cluster.terms import FenceBinding


@dataclass
class Fence:
    epoch: int
    tripped: asyncio.Event


FENCE: contextvars.ContextVar[Fence | None] = contextvars.ContextVar("stand-in fence", default=None)
FENCING = FenceBinding(FENCE, Fence)


class StandInLeadership:
    """Leads when the test says: ``grant(epoch)`` starts a term (``acquired()`` returns it), ``revoke(reason)`` ends
    it (as an expired lease would). ``step_downs`` and ``released`` record what the terms asked of it."""

    def __init__(self) -> None:
        self.term: Term | None = None
        self.step_downs: list[str] = []
        self.released = False
        self._granted = asyncio.Event()

    def grant(self, epoch: int) -> Term:
        self.term = Term(epoch, now_ms())
        self._granted.set()
        return self.term

    def revoke(self, reason: str) -> None:
        term, self.term = self.term, None
        if term is not None:
            term.reason = reason
            term.lost.set()

    def valid(self) -> bool:
        return self.term is not None and not self.term.lost.is_set()

    async def acquired(self) -> Term:
        while True:
            await self._granted.wait()
            self._granted.clear()
            if self.term is not None:
                return self.term

    def step_down(self, reason: str) -> None:
        self.step_downs.append(reason)
        self.revoke(reason)

    def wake(self) -> None:
        pass

    async def release(self) -> None:
        self.released = True
        self.revoke("released")

    async def run(self) -> None:
        await asyncio.Event().wait()
