"""GroupCommit: calls made while a round trip is out share the next one; every caller gets its own result."""
from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from comfyart.store.batching import GroupCommit


class Recorder:
    """A ``send`` that records its batches and can be held open, as a slow Redis round trip."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail_next = False

    async def __call__(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        await self.gate.wait()
        if self.fail_next:
            self.fail_next = False
            raise ConnectionError("redis went away")
        return [item * 10 for item in items]


async def test_calls_of_one_tick_go_together_and_each_gets_its_result():
    send = Recorder()
    commit = GroupCommit(send)
    assert await asyncio.gather(*(commit(i) for i in range(5))) == [0, 10, 20, 30, 40]
    assert send.batches == [[0, 1, 2, 3, 4]]  # call order kept
    assert (commit.batches, commit.items) == (1, 5)


async def test_an_idle_caller_is_sent_at_once():
    send = Recorder()
    commit = GroupCommit(send)
    assert await commit(7) == 70
    assert await commit(8) == 80
    assert send.batches == [[7], [8]]


async def test_calls_made_during_a_round_trip_go_in_the_next_one():
    send = Recorder()
    send.gate.clear()
    commit = GroupCommit(send)
    first = asyncio.ensure_future(commit(1))
    await asyncio.sleep(0.01)
    assert send.batches == [[1]]  # out, and held
    later = [asyncio.ensure_future(commit(i)) for i in (2, 3, 4)]
    await asyncio.sleep(0.01)
    assert send.batches == [[1]]  # nothing else is sent while the first is out
    send.gate.set()
    assert await first == 10 and await asyncio.gather(*later) == [20, 30, 40]
    assert send.batches == [[1], [2, 3, 4]]


async def test_max_batch_splits_a_long_backlog():
    send = Recorder()
    commit = GroupCommit(send, max_batch=2)
    assert await asyncio.gather(*(commit(i) for i in range(5))) == [0, 10, 20, 30, 40]
    assert send.batches == [[0, 1], [2, 3], [4]]


async def test_a_failed_round_trip_fails_its_callers_only():
    send = Recorder()
    send.gate.clear()
    commit = GroupCommit(send)
    doomed = [asyncio.ensure_future(commit(i)) for i in (1, 2)]
    await asyncio.sleep(0.01)
    spared = asyncio.ensure_future(commit(3))  # joins the next round trip
    send.fail_next = True
    send.gate.set()
    for call in doomed:
        with pytest.raises(ConnectionError, match="went away"):
            await call
    assert await spared == 30
    assert await commit(4) == 40  # and the commit goes on working


async def test_a_cancelled_caller_leaves_the_others_their_results():
    send = Recorder()
    send.gate.clear()
    commit = GroupCommit(send)
    calls = [asyncio.ensure_future(commit(i)) for i in (1, 2, 3)]
    await asyncio.sleep(0.01)
    calls[1].cancel()
    send.gate.set()
    assert await calls[0] == 10 and await calls[2] == 30
    assert calls[1].cancelled()
    assert send.batches == [[1, 2, 3]]  # it was on its way: a cancelled call's item may still be sent


async def test_aclose_waits_for_what_is_on_its_way():
    send = Recorder()
    send.gate.clear()
    commit = GroupCommit(send)
    call = asyncio.ensure_future(commit(5))
    await asyncio.sleep(0.01)
    closing = asyncio.ensure_future(commit.aclose())
    await asyncio.sleep(0.01)
    assert not closing.done()
    send.gate.set()
    await closing
    assert call.done() and call.result() == 50
    await commit.aclose()  # nothing out: returns at once


async def test_a_cancelled_sender_cancels_every_waiting_caller():
    send = Recorder()
    send.gate.clear()
    commit = GroupCommit(send)
    first = asyncio.ensure_future(commit(1))
    await asyncio.sleep(0.01)
    second = asyncio.ensure_future(commit(2))
    await asyncio.sleep(0)
    assert commit._sender is not None
    commit._sender.cancel()  # the loop closing under it
    await asyncio.sleep(0.01)
    assert first.cancelled() and second.cancelled()  # nobody waits for ever
    send.gate.set()
    assert await commit(3) == 30  # a new call starts a new sender
