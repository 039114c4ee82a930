"""Rates (policy.rates): the submission rate limit, and when a webhook is tried again."""
from __future__ import annotations

import pytest

from comfyart.policy.rates import rate_limit, webhook_next_attempt


def test_the_rate_limit_allows_a_burst_then_one_per_interval():
    now, tat, allowed = 1_000_000, None, []
    for _ in range(5):  # 60 a minute, bursts of 3: three at once, then refused
        decision = rate_limit(now_ms=now, tat_ms=tat, per_minute=60, burst=3)
        allowed.append(decision.allowed)
        tat = decision.tat_ms
    assert allowed == [True, True, True, False, False]
    refused = rate_limit(now_ms=now, tat_ms=tat, per_minute=60, burst=3)
    assert refused.retry_after_ms == 1000 and refused.tat_ms == tat  # a refusal costs nothing
    assert not rate_limit(now_ms=now + 999, tat_ms=tat, per_minute=60, burst=3).allowed
    later = rate_limit(now_ms=now + 1000, tat_ms=tat, per_minute=60, burst=3)
    assert later.allowed and not rate_limit(now_ms=now + 1000, tat_ms=later.tat_ms, per_minute=60, burst=3).allowed
    # idle long enough, the whole burst is back, and no more
    rested = now + 60_000
    assert [rate_limit(now_ms=rested, tat_ms=t, per_minute=60, burst=3).allowed
            for t in (later.tat_ms,)] == [True]
    tat = later.tat_ms
    count = 0
    while (decision := rate_limit(now_ms=rested, tat_ms=tat, per_minute=60, burst=3)).allowed:
        tat, count = decision.tat_ms, count + 1
    assert count == 3


@pytest.mark.parametrize("per_minute, burst, expected", [(600, 1, 1), (600, 10, 10), (7, 2, 2), (0.5, 1, 1)])
def test_the_burst_is_what_goes_at_once_at_any_rate(per_minute, burst, expected):
    tat, count = None, 0
    while (decision := rate_limit(now_ms=5_000, tat_ms=tat, per_minute=per_minute, burst=burst)).allowed:
        tat, count = decision.tat_ms, count + 1
    assert count == expected and decision.retry_after_ms == pytest.approx(60_000 / per_minute, abs=1)


def test_no_rate_means_no_limit():
    assert all(rate_limit(now_ms=1, tat_ms=10**12, per_minute=0, burst=1).allowed for _ in range(3))


@pytest.mark.parametrize("attempt, status, expected", [
    (1, 200, None), (1, 204, None), (3, 299, None),
    (1, 500, 1.0), (2, 503, 2.0), (3, None, 4.0), (4, 404, 8.0), (1, 300, 1.0),
    (8, 500, None),  # the last attempt
    (7, 500, 30.0),  # capped
])
def test_webhook_retries_double_up_to_the_cap_until_2xx_or_the_last_attempt(attempt, status, expected):
    assert webhook_next_attempt(attempt=attempt, status=status, max_attempts=8, backoff_s=1.0,
                                backoff_max_s=30.0) == expected
