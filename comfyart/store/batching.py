"""Group commit for Redis calls: the calls made while one round trip is out go together in the next.

An idle daemon sends each call at once (the batch of one leaves at the next turn of the event loop); a busy one
sends everything that piled up during the previous round trip as one. Under load that turns a few hundred small
script calls a second into a few dozen, which is most of their cost: redis-py spends more per command (taking a
connection, packing, parsing) than Redis spends running a short script.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class GroupCommit(Generic[Item, Result]):
    """``await commit(item)`` returns ``send([..., item, ...])``'s result for that item. ``send`` takes up to
    ``max_batch`` items in call order and returns one result per item (an exception it raises goes to every
    caller of that batch). A caller that is cancelled stops waiting, but its item may already be on its way."""

    def __init__(self, send: Callable[[Sequence[Item]], Awaitable[Sequence[Result]]], *,
                 max_batch: int = 256) -> None:
        self._send = send
        self.max_batch = max_batch
        self._waiting: list[tuple[Item, asyncio.Future[Result]]] = []
        self._sender: asyncio.Task[None] | None = None
        self.batches = 0  # round trips made: with ``items``, how much was grouped
        self.items = 0

    async def __call__(self, item: Item) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._drain(), name="group commit")
        return await future

    async def _drain(self) -> None:
        batch: list[tuple[Item, asyncio.Future[Result]]] = []
        try:
            while self._waiting:
                batch, self._waiting = self._waiting[:self.max_batch], self._waiting[self.max_batch:]
                self.batches += 1
                self.items += len(batch)
                try:
                    results = await self._send([item for item, _ in batch])
                except Exception as exc:  # noqa: BLE001 - it belongs to the callers, who each get it
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        except BaseException:
            # cancelled (the loop is closing): nobody may wait for ever; what was on its way has an unknown fate,
            # as a cancelled call's has
            for _, future in [*batch, *self._waiting]:
                if not future.done():
                    future.cancel()
            self._waiting.clear()
            raise
        finally:
            self._sender = None

    async def aclose(self) -> None:
        """Wait for what is on its way (the daemon's shutdown, before Redis is closed)."""
        while self._sender is not None:
            await asyncio.shield(self._sender)
