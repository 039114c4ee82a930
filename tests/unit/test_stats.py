"""The chart history's pure parts: which events count as an ending, and which samples a window holds."""
from __future__ import annotations

import pytest

from comfyart.stats import is_ending, samples_within


@pytest.mark.parametrize("event, ending", [
    ({"type": "task", "status": "completed", "previous": "running"}, True),
    ({"type": "task", "status": "failed", "previous": "pending"}, True),  # refused at submission
    ({"type": "task", "status": "canceled", "previous": "pending"}, True),
    ({"type": "task", "status": "completed", "previous": "completed"}, False),  # a field written to an ended task
    ({"type": "task", "status": "running", "previous": "pending"}, False),
    ({"type": "task", "status": "pending", "previous": "running"}, False),  # back in the queue for a retry
    ({"type": "task", "status": "pending", "previous": None}, False),
    ({"type": "progress", "id": "x", "progress": 1.0}, False),
    ({"type": "queue", "queued": 1}, False),
    ({"type": "lagged"}, False),
])
def test_endings(event, ending):
    assert is_ending(event) is ending


def test_a_window_holds_the_recent_samples_oldest_first():
    newest_first = [{"t": 10_000}, {"t": 9_000}, {"t": 5_000}, {"t": 1_000}]
    assert samples_within(newest_first, now_ms=10_500, window_s=5) == [{"t": 9_000}, {"t": 10_000}]
    assert samples_within(newest_first, now_ms=10_500, window_s=10) == [{"t": 1_000}, {"t": 5_000}, {"t": 9_000},
                                                                         {"t": 10_000}]
    assert samples_within(newest_first, now_ms=100_000, window_s=1) == []
    assert samples_within([{"t": 5}, "junk", 7], now_ms=5, window_s=1) == [{"t": 5}]
