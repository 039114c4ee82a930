"""Loops that misbehave, for the tests of their owners."""
from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any


def deaf_loop(swallowed: list[bool]) -> Callable[[], Coroutine[Any, Any, None]]:
    """A loop that swallows its first cancel (as a library that catches it and carries on: redis-py's timeouts on
    Python 3.11), noting it in ``swallowed``, and then waits for good."""

    async def deaf() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            swallowed.append(True)
        await asyncio.Event().wait()

    return deaf
