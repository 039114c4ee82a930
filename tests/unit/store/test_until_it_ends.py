"""``until_it_ends``: a loop cancelled by its owner ends for good, even one that swallowed the cancel; work that
ends by itself returns as it ends."""
from __future__ import annotations

import asyncio

from comfyart.store.redis import until_it_ends
from tests.support.loops import deaf_loop


async def test_work_that_ends_returns():
    ran: list[int] = []

    async def work() -> None:
        ran.append(1)

    await asyncio.wait_for(until_it_ends("work", work()), 5)
    assert ran == [1]


async def test_a_swallowed_cancel_is_given_again_until_the_work_ends_then_the_caller_is_cancelled():
    swallowed: list[bool] = []
    owner = asyncio.get_running_loop().create_task(until_it_ends("deaf", deaf_loop(swallowed)()))
    await asyncio.sleep(0.01)
    owner.cancel()
    done, _ = await asyncio.wait({owner}, timeout=5)
    assert done == {owner} and owner.cancelled() and swallowed == [True]
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "deaf"]  # the work itself ended too
