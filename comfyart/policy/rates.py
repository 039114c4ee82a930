"""Rates and retry schedules: a client's submission rate (GCRA) and when a webhook is tried again."""
from __future__ import annotations

import math
from dataclasses import dataclass

from comfyart.policy.backoff import Backoff


def webhook_next_attempt(*, attempt: int, status: int | None, max_attempts: int, backoff_s: float,
                         backoff_max_s: float, rand: float = 0.0) -> float | None:
    """After delivery attempt ``attempt`` (1 = the first) answered ``status`` (None: no answer at all): None when
    it is done (delivered, or given up after ``max_attempts``), else the seconds to wait before the next one.
    Any answer other than 2xx is retried: a receiver that is down often answers 502 or 503 from its proxy. The waits
    follow the shared ``Backoff`` (doubling from ``backoff_s`` up to ``backoff_max_s``, shortened by ``rand``'s
    jitter), so receivers that come back are not hit by every sender at once."""
    if status is not None and 200 <= status < 300:
        return None
    if attempt >= max_attempts:
        return None
    return Backoff(first_s=backoff_s, max_s=backoff_max_s).delay(attempt, rand)


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    tat_ms: float  # the theoretical arrival time to keep (unchanged when refused); fractional: no drift
    retry_after_ms: int  # 0 when allowed


def rate_limit(*, now_ms: int, tat_ms: float | None, per_minute: float, burst: int) -> RateDecision:
    """One submission against a rate of ``per_minute`` with ``burst`` allowed at once (the generic cell rate
    algorithm: ``tat_ms`` is when the caller would be back to an empty bucket). A refusal says how long until
    one more is allowed."""
    if per_minute <= 0:
        return RateDecision(True, tat_ms or now_ms, 0)
    interval_ms = 60_000.0 / per_minute
    start = max(tat_ms or now_ms, now_ms)
    new_tat = start + interval_ms
    tolerance = interval_ms * max(1, burst)
    if new_tat - now_ms > tolerance:
        return RateDecision(False, tat_ms or now_ms, max(1, math.ceil(new_tat - tolerance - now_ms)))
    return RateDecision(True, new_tat, 0)
