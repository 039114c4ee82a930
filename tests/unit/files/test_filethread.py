"""FileThread: blocking calls run in one thread, in call order, and each caller gets its own result."""
from __future__ import annotations

import asyncio
import threading
import time

import pytest

from comfyart.files.filethread import FileThread


async def test_calls_run_off_the_loop_in_order_with_their_results():
    files = FileThread()
    ran = []

    def work(n: int) -> tuple:
        ran.append(n)
        return n * 2, threading.current_thread().name

    results = await asyncio.gather(*(files.run(work, n) for n in range(50)))
    assert [r[0] for r in results] == [n * 2 for n in range(50)]
    assert {r[1] for r in results} == {"comfyart files"}  # one thread, not the loop's
    assert ran == list(range(50))
    await files.aclose()


async def test_an_exception_goes_to_its_caller_only():
    files = FileThread()

    def maybe(n: int) -> int:
        if n == 2:
            raise FileNotFoundError("gone")
        return n

    results = await asyncio.gather(*(files.run(maybe, n) for n in range(4)), return_exceptions=True)
    assert results[:2] == [0, 1] and results[3] == 3
    assert isinstance(results[2], FileNotFoundError)
    await files.aclose()


async def test_the_loop_keeps_running_while_a_call_blocks():
    files = FileThread()
    call = asyncio.ensure_future(files.run(time.sleep, 0.2))
    started = time.monotonic()
    await asyncio.sleep(0.01)  # answered at once: the sleep is in the thread
    assert time.monotonic() - started < 0.15 and not call.done()
    await call
    await files.aclose()


async def test_aclose_finishes_what_was_asked_then_a_new_call_starts_over():
    files = FileThread()
    done = []
    calls = [asyncio.ensure_future(files.run(lambda n=n: (time.sleep(0.01), done.append(n)))) for n in range(5)]
    await asyncio.sleep(0)
    await files.aclose()
    assert done == [0, 1, 2, 3, 4]
    await asyncio.gather(*calls)
    assert await files.run(sum, [1, 2]) == 3  # a fresh thread
    await files.aclose()
    await files.aclose()  # nothing running: a no-op


async def test_a_cancelled_caller_does_not_disturb_the_others():
    files = FileThread()
    gate = threading.Event()
    first = asyncio.ensure_future(files.run(gate.wait, 5))
    second = asyncio.ensure_future(files.run(lambda: "second"))
    await asyncio.sleep(0.01)
    first.cancel()
    gate.set()
    assert await second == "second"
    with pytest.raises(asyncio.CancelledError):
        await first
    await files.aclose()
