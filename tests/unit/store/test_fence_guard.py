"""``ensure_leading``: the check right before a write Redis cannot fence (POST /prompt, a provider's spawn or
remove, a backend socket under the shared client id)."""
from __future__ import annotations

import asyncio

import pytest

from comfyart.errors import Fenced
from comfyart.store.fence import FENCE, Fence, ensure_leading


def test_a_valid_term_or_no_leadership_lets_the_write_go():
    ensure_leading(lambda: True, "POST /prompt")
    ensure_leading(None, "POST /prompt")


async def test_a_term_over_refuses_the_write_and_trips_the_fence():
    fence = Fence(7, asyncio.Event())
    token = FENCE.set(fence)
    try:
        with pytest.raises(Fenced, match="its term is over: POST /prompt of task t1 not done"):
            ensure_leading(lambda: False, "POST /prompt of task t1")
    finally:
        FENCE.reset(token)
    assert fence.tripped.is_set()  # the term ends even if a loop swallowed the error


async def test_a_task_of_an_earlier_term_is_refused_while_the_replica_leads_again():
    earlier = Fence(7, asyncio.Event())
    earlier.tripped.set()  # its term ended (cluster.terms trips a term's fence as it ends)
    token = FENCE.set(earlier)
    try:
        with pytest.raises(Fenced, match="its term is over"):
            ensure_leading(lambda: True, "POST /prompt of task t1")  # this replica leads, under a newer epoch
    finally:
        FENCE.reset(token)
