"""The one retry schedule every retry loop uses: exponential, capped, with jitter.

Jitter matters here: when a Docker host comes back, or a backend restarts, every loop that waited on it retries;
without it they all retry in the same instant, again and again. Randomness comes in as an argument.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

MAX_DOUBLINGS = 64  # past this the cap has long been reached; it keeps the power finite


@dataclass(frozen=True)
class Backoff:
    """Wait ``first_s`` before the first retry, ``factor`` times longer before each one after, never more than
    ``max_s``; each wait is shortened by up to ``jitter`` of itself, at random."""

    first_s: float
    max_s: float
    factor: float = 2.0
    jitter: float = 0.2

    def delay(self, retry: int, rand: float) -> float:
        """The wait before retry number ``retry`` (1: the first); ``rand`` is uniform in [0, 1)."""
        base = min(self.max_s, self.first_s * self.factor ** min(max(0, retry - 1), MAX_DOUBLINGS))
        return base * (1.0 - self.jitter * rand)

    def delays(self, rand: Callable[[], float]) -> Iterator[float]:
        """The waits before each retry in turn, without end: start a new iterator after a success."""
        retry = 0
        while True:
            retry += 1
            yield self.delay(retry, rand())
