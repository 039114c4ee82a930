"""LeaderTerms over a leadership the test drives: the leader's loops run only within a term, with the term's fence
set, and start again, fresh, at the next; a refused write ends the term and steps down."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from comfyart.cluster.terms import LeaderLoopExited, LeaderTerms
from comfyart.errors import Fenced
from tests.support.leadership import FENCE, FENCING, Fence, StandInLeadership
from tests.support.loops import deaf_loop


class Recorder:
    """Leader loops that note the fence they (and a task they start) see, and when they start and end."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.fences: list[tuple[str, int | None]] = []
        self.seen: list[Fence] = []
        self.resets = 0
        self.running = 0
        self.fail: BaseException | None = None

    def loop(self, name: str) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            fence = FENCE.get()
            self.fences.append((name, fence.epoch if fence else None))
            if fence is not None:
                self.seen.append(fence)
            self.log.append(f"start {name}")
            self.running += 1
            try:
                async with asyncio.TaskGroup() as inner:  # a task of the loop's inherits the fence
                    inner.create_task(self._inner(name), name=f"{name} inner")
                    while True:
                        await asyncio.sleep(0.01)
                        if self.fail is not None and name == "dispatcher":
                            raise self.fail
            finally:
                self.running -= 1
                self.log.append(f"end {name}")
        return run

    async def _inner(self, name: str) -> None:
        fence = FENCE.get()
        self.fences.append((f"{name} inner", fence.epoch if fence else None))
        await asyncio.Event().wait()

    async def reset(self) -> None:
        self.resets += 1
        self.log.append("reset")


@asynccontextmanager
async def running(terms: LeaderTerms) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.get_running_loop().create_task(terms.run(), name="terms under test")
    try:
        yield task
    finally:
        await asyncio.wait_for(terms.stop(), 5)
        await asyncio.wait_for(task, 5)


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.005)


def make_terms(recorder: Recorder, leadership: StandInLeadership) -> LeaderTerms:
    loops = {name: recorder.loop(name) for name in ("tracker", "dispatcher")}
    return LeaderTerms(leadership, loops, reset=recorder.reset, fence=FENCING)


async def test_loops_run_only_within_a_term_with_its_fence_and_start_again_fresh_at_the_next():
    recorder, leadership = Recorder(), StandInLeadership()
    terms = make_terms(recorder, leadership)
    async with running(terms):
        await asyncio.sleep(0.05)
        assert recorder.running == 0 and not terms.leading()  # no term yet: nothing runs
        leadership.grant(7)
        await until(lambda: len(recorder.fences) == 4)
        assert sorted(recorder.fences) == [("dispatcher", 7), ("dispatcher inner", 7), ("tracker", 7),
                                           ("tracker inner", 7)]
        assert recorder.log[0] == "reset" and terms.current is not None and terms.current.epoch == 7
        assert FENCE.get() is None  # only the term's tasks carry it
        leadership.revoke("epoch moved")
        await until(lambda: not terms.leading() and recorder.log[-1] == "reset")
        assert recorder.running == 0 and recorder.resets == 2
        assert leadership.step_downs == []  # it lost the term: nothing to step down from
        leadership.grant(8)
        await until(lambda: len(recorder.fences) == 8)
        assert sorted(recorder.fences[4:]) == [("dispatcher", 8), ("dispatcher inner", 8), ("tracker", 8),
                                               ("tracker inner", 8)]
        assert recorder.resets == 3 and terms.led == 2
    assert recorder.running == 0 and recorder.resets == 4 and not terms.leading()


async def test_a_loop_whose_write_is_fenced_ends_the_term_and_steps_down():
    recorder, leadership = Recorder(), StandInLeadership()
    terms = make_terms(recorder, leadership)
    async with running(terms) as task:
        leadership.grant(3)
        await until(lambda: recorder.running == 2)
        recorder.fail = Fenced("the epoch moved on")
        await until(lambda: leadership.step_downs == ["fenced"])
        await until(lambda: recorder.running == 0 and not terms.leading())
        assert not task.done()  # waits for the next term
        recorder.fail = None
        leadership.grant(5)
        await until(lambda: recorder.running == 2)
        assert terms.current is not None and terms.current.epoch == 5


async def test_a_fence_tripped_by_the_store_ends_the_term_even_when_the_loop_swallowed_the_error():
    recorder, leadership = Recorder(), StandInLeadership()
    terms = make_terms(recorder, leadership)
    async with running(terms):
        leadership.grant(4)
        await until(lambda: recorder.running == 2)
        assert recorder.seen and all(fence.epoch == 4 for fence in recorder.seen)
        recorder.seen[0].tripped.set()  # what the store does when it refuses a write of this epoch
        await until(lambda: leadership.step_downs == ["fenced"] and recorder.running == 0)


async def test_another_error_of_a_leader_loop_fails_the_terms_and_a_loop_that_returns_too():
    recorder, leadership = Recorder(), StandInLeadership()
    terms = make_terms(recorder, leadership)
    task = asyncio.get_running_loop().create_task(terms.run())
    leadership.grant(1)
    await until(lambda: recorder.running == 2)
    recorder.fail = ValueError("a bug")
    with pytest.raises(ExceptionGroup) as failed:
        await asyncio.wait_for(task, 5)
    assert failed.group_contains(ValueError)
    assert recorder.running == 0 and recorder.resets == 2 and leadership.step_downs == []

    async def returns() -> None:
        return None

    terms = LeaderTerms(leadership, {"stats": returns})
    task = asyncio.get_running_loop().create_task(terms.run())
    leadership.grant(2)
    with pytest.raises(ExceptionGroup) as failed:
        await asyncio.wait_for(task, 5)
    assert failed.group_contains(LeaderLoopExited, match="stats stopped on its own")


async def test_stop_ends_the_term_being_led_and_any_wait_for_one():
    recorder, leadership = Recorder(), StandInLeadership()
    terms = make_terms(recorder, leadership)
    task = asyncio.get_running_loop().create_task(terms.run())
    await asyncio.sleep(0.02)
    await asyncio.wait_for(terms.stop(), 5)  # no term: it stops waiting for one
    await asyncio.wait_for(task, 5)
    assert recorder.resets == 0
    terms = make_terms(recorder, leadership)
    task = asyncio.get_running_loop().create_task(terms.run())
    leadership.grant(9)
    await until(lambda: recorder.running == 2)
    await asyncio.wait_for(terms.stop(), 5)
    assert recorder.running == 0 and recorder.log[-1] == "reset" and not terms.leading()
    await asyncio.wait_for(task, 5)
    assert leadership.step_downs == []



async def test_a_loop_that_swallowed_its_cancel_is_cancelled_again_and_the_term_still_ends():
    """A cancel that meets a Redis call can be lost there (redis-py's timeouts on Python 3.11): the loop then
    waits on (here: for an event nobody sets). The term cancels it again until it ends, so stop() returns."""
    swallowed: list[bool] = []
    leadership = StandInLeadership()
    terms = LeaderTerms(leadership, {"deaf": deaf_loop(swallowed)})
    task = asyncio.get_running_loop().create_task(terms.run())
    leadership.grant(3)
    await until(terms.leading)
    await asyncio.sleep(0.01)
    await asyncio.wait_for(terms.stop(), 5)
    await asyncio.wait_for(task, 5)
    assert swallowed == [True] and not terms.leading()
