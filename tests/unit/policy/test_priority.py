"""Priorities and the queue score (policy.priority): strict levels, FIFO within one, ageing."""
import random

import pytest

from comfyart.policy.priority import STRICT_LEVEL_MS, parse_priority, queue_score


@pytest.mark.parametrize("value, expected", [
    ("high", 1), ("normal", 0), ("low", -1), ("HIGH", 1), (5, 5), (-100, -100), (100, 100), (0, 0),
])
def test_parse_priority(value, expected):
    assert parse_priority(value) == expected


@pytest.mark.parametrize("value", ["urgent", "", 101, -101, 1.5, True, None, [1]])
def test_parse_priority_refuses(value):
    with pytest.raises(ValueError, match="high, normal, low"):
        parse_priority(value)


def test_strict_priority_without_ageing_whatever_the_wait():
    year_ms = 365 * 24 * 3600 * 1000
    assert queue_score(10**12 + year_ms, 1, 0) < queue_score(10**12, 0, 0)  # a new high beats a year-old normal
    assert queue_score(10**12, 0, 0) < queue_score(10**12 + 1, 0, 0)  # FIFO within a level
    assert queue_score(0, 100, 0) == -100 * STRICT_LEVEL_MS
    assert float(queue_score(2 * 10**12, -100, 0)) == queue_score(2 * 10**12, -100, 0)  # exact as a Redis score


def test_ageing_lifts_a_task_one_level_per_period():
    ageing_s = 60
    old_low = queue_score(1_000_000, -1, ageing_s)
    # after waiting one period a low task ranks with a new normal one, after two with a new high one
    assert old_low == queue_score(1_000_000 + 60_000, 0, ageing_s)
    assert old_low == queue_score(1_000_000 + 120_000, 1, ageing_s)
    assert old_low < queue_score(1_000_000 + 120_001, 1, ageing_s)
    assert queue_score(1_000_000 + 59_999, 0, ageing_s) < old_low  # not yet


def test_ordering_by_score_is_strict_priority_then_fifo():
    rng = random.Random(3)
    tasks = [(rng.randrange(10**12, 10**12 + 10**6), rng.choice([-1, 0, 1, 7])) for _ in range(500)]
    ordered = sorted(tasks, key=lambda t: queue_score(t[0], t[1], 0))
    assert ordered == sorted(tasks, key=lambda t: (-t[1], t[0]))
