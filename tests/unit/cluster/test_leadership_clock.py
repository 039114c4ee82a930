"""The clock and the term of cluster.leadership, without Redis: the clock that counts through a stopped process,
and a Term that nobody ended yet."""
from __future__ import annotations

import time

from comfyart.cluster.leadership import Term, _default_clock, boot_clock


def test_the_default_clock_is_boottime_where_linux_has_it():
    assert hasattr(time, "CLOCK_BOOTTIME")  # the machines comfyart runs on: Linux
    assert _default_clock() is boot_clock


def test_boot_clock_runs_at_the_rate_of_the_monotonic_clock():
    boot, mono = boot_clock(), time.monotonic()
    time.sleep(0.05)
    boot_elapsed, mono_elapsed = boot_clock() - boot, time.monotonic() - mono
    assert boot_elapsed >= 0.05
    assert abs(boot_elapsed - mono_elapsed) < 0.01


async def test_a_new_term_is_not_lost_and_says_no_reason():
    term = Term(epoch=7, since_ms=1)
    assert not term.lost.is_set() and term.reason is None
    assert Term(epoch=8, since_ms=2).lost is not term.lost
