"""The submission rate script on a real redis-server decides as ``policy.rate_limit`` does, step for step."""
from __future__ import annotations

import random

import pytest

from comfyart.auth import Principal, Role
from comfyart.config.sections import QuotaConfig
from comfyart.errors import QuotaExceeded
from comfyart.policy.rates import rate_limit
from comfyart.store.keys import Keys
from comfyart.store.quotas import Quotas


@pytest.mark.parametrize("per_minute, burst", [(60, 3), (7, 2), (600, 1), (0.5, 4), (10_000, 50)])
async def test_the_script_replays_the_pure_rule(redis_client, per_minute, burst):
    quotas = Quotas(redis_client, Keys("q"), QuotaConfig(submissions_per_minute=per_minute, burst=burst))
    rng = random.Random(f"{per_minute}/{burst}")
    now, tat = 1_000_000, None
    interval = 60_000 / per_minute
    for step in range(300):
        now += rng.choice([0, 0, 1, int(interval / 3), int(interval), int(interval * 2)])
        expected = rate_limit(now_ms=now, tat_ms=tat, per_minute=per_minute, burst=burst)
        allowed, wait = await quotas._rate(keys=["q:rate"], args=[now, repr(float(per_minute)), burst])
        assert (bool(allowed), int(wait)) == (expected.allowed, expected.retry_after_ms), step
        tat = expected.tat_ms


async def test_a_client_over_its_rate_is_refused_with_when_to_come_back(redis_client):
    quotas = Quotas(redis_client, Keys("q"), QuotaConfig(submissions_per_minute=60, burst=2))
    client = Principal(id="c", name="c", role=Role.CLIENT)
    fast = Principal(id="f", name="f", role=Role.CLIENT, submissions_per_minute=0)
    admin = Principal(id="a", name="a", role=Role.ADMIN)
    await quotas.submission(client)
    await quotas.submission(client)
    with pytest.raises(QuotaExceeded) as refused:
        await quotas.submission(client)
    assert 0 < refused.value.retry_after_s <= 1.0
    for _ in range(50):  # no limit for a key set to 0, nor for admins
        await quotas.submission(fast)
        await quotas.submission(admin)
    assert await redis_client.exists("q:owner:f:rate", "q:owner:a:rate") == 0
    assert 0 < await redis_client.pttl("q:owner:c:rate") <= 2000  # kept only while it matters
