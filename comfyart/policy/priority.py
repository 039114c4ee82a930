"""Task priorities: the names and range a request may give, and a task's place in the queue."""
from __future__ import annotations

from typing import Any

PRIORITY_NAMES: dict[str, int] = {"low": -1, "normal": 0, "high": 1}
PRIORITY_RANGE = (-100, 100)
# without ageing one level must outweigh any wait: 10^13 ms is 300 years, and 100 levels of it still fit in the
# 53 bits a Redis score keeps exactly
STRICT_LEVEL_MS = 10**13


def parse_priority(value: Any) -> int:
    """``high``, ``normal``, ``low`` or a whole number in PRIORITY_RANGE (higher runs first); ValueError says why
    a value is not one."""
    if isinstance(value, str) and value.lower() in PRIORITY_NAMES:
        return PRIORITY_NAMES[value.lower()]
    if isinstance(value, int) and not isinstance(value, bool) and PRIORITY_RANGE[0] <= value <= PRIORITY_RANGE[1]:
        return value
    low, high = PRIORITY_RANGE
    raise ValueError(f"must be high, normal, low or a whole number from {low} to {high}")


def queue_score(created_ms: int, priority: int, ageing_s: float) -> int:
    """A task's place in the queue, lowest first. Comparing ``created - priority × level`` is comparing
    ``priority + waited / level`` at any instant, so the order never needs rewriting as tasks age: a task that has
    waited ``ageing_s`` longer ranks with a new task one level up. ``ageing_s`` 0 means strict priority."""
    level_ms = int(ageing_s * 1000) if ageing_s > 0 else STRICT_LEVEL_MS
    return created_ms - priority * level_ms
