"""``map_redis_errors``: a Redis error is a hiccup (StoreUnavailable) unless the task is being cancelled."""
from __future__ import annotations

import asyncio

import pytest
import redis.exceptions

from comfyart.errors import StoreUnavailable
from comfyart.store.redis import map_redis_errors


async def test_a_redis_error_is_the_store_unavailable():
    with pytest.raises(StoreUnavailable, match="Redis unavailable: gone"), map_redis_errors():
        raise redis.exceptions.ConnectionError("gone")


async def test_a_redis_error_met_while_being_cancelled_is_the_cancellation():
    """redis-py can turn the CancelledError it meets into a connection or timeout error; a loop that treats
    StoreUnavailable as a hiccup would then carry on, and the daemon's stop would wait for it for good."""
    async def command_under_way() -> None:
        try:
            await asyncio.sleep(0.3)
        except asyncio.CancelledError as exc:  # what redis-py made of the cancellation
            raise redis.exceptions.TimeoutError("Timeout reading from socket") from exc

    async def loop_that_carries_on_after_hiccups() -> int:
        rounds = 0
        while rounds < 3:
            rounds += 1
            try:
                with map_redis_errors():
                    await command_under_way()
            except StoreUnavailable:
                continue
        return rounds

    task = asyncio.create_task(loop_that_carries_on_after_hiccups())
    await asyncio.sleep(0.05)
    task.cancel()  # the daemon stops while a command is under way
    await asyncio.wait([task], timeout=5)
    assert task.cancelled(), f"the loop carried on after its cancellation: {task.result()} rounds"
