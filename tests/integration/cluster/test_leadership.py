"""Leadership (cluster.leadership) of replicas on one real redis-server, with short leases: one leads, a standby
takes over when the leader's loop dies (a lease later) or releases (a poll later), and a leader steps down when its
deadline passes unrenewed (a jump of its clock, a frozen process, Redis not answering) or its lease was taken."""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
import redis.asyncio as aioredis

from comfyart.cluster.leadership import Leadership, Term
from comfyart.config.sections import ClusterConfig
from comfyart.policy.leadership import EPOCH_MOVED, RENEW_FAILED
from comfyart.store.keys import Keys
from comfyart.store.lease import LeaseStore

KEYS = Keys("test")
FAST = ClusterConfig(lease_s=1.0, renew_interval_s=0.25, standby_poll_s=0.1)
SLACK_S = 0.5  # scheduling on a busy 2-core machine


@dataclass
class Replica:
    leadership: Leadership
    task: asyncio.Task[None]
    offset: list[float]  # added to the clock: a test jumps it forward

    def kill(self) -> None:
        self.task.cancel()


Start = Callable[..., Replica]


@pytest.fixture
async def start(redis_url: str) -> AsyncIterator[Start]:
    """Factory: ``start(name, config=FAST)`` runs the leadership loop of a replica with a client of its own."""
    clients: list[aioredis.Redis] = []
    stores: list[LeaseStore] = []
    replicas: list[Replica] = []

    def start_one(name: str, config: ClusterConfig = FAST) -> Replica:
        clients.append(aioredis.from_url(redis_url, decode_responses=True))
        stores.append(LeaseStore(clients[-1], KEYS))
        offset = [0.0]
        leadership = Leadership(stores[-1], replica=name, config=config,
                                clock=lambda: time.clock_gettime(time.CLOCK_BOOTTIME) + offset[0])
        replicas.append(Replica(leadership, asyncio.create_task(leadership.run(), name=f"leadership {name}"),
                                offset))
        return replicas[-1]

    yield start_one
    for replica in replicas:
        replica.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await replica.task
    for store, client in zip(stores, clients, strict=True):
        await store.aclose()
        await client.aclose()


async def first_leader(*replicas: Replica, within_s: float = 2.0) -> tuple[Replica, Term]:
    async def lead(replica: Replica) -> tuple[Replica, Term]:
        return replica, await replica.leadership.acquired()

    waits = [asyncio.create_task(lead(replica)) for replica in replicas]
    try:
        done, _ = await asyncio.wait(waits, timeout=within_s, return_when=asyncio.FIRST_COMPLETED)
        assert done, f"nobody leads after {within_s} s"
        return next(iter(done)).result()
    finally:
        for wait in waits:
            wait.cancel()


async def lost_within(term: Term, seconds: float) -> str | None:
    await asyncio.wait_for(term.lost.wait(), seconds)
    return term.reason


async def test_one_of_two_replicas_leads_and_keeps_renewing(start, redis_client):
    a, b = start("a"), start("b")
    leader, term = await first_leader(a, b)
    other = b if leader is a else a
    await asyncio.sleep(FAST.lease_s * 2)  # several renews, and past the lease: still the same term
    assert leader.leadership.term is term and not term.lost.is_set()
    assert leader.leadership.valid() and not other.leadership.valid()
    assert other.leadership.term is None
    holder = await leader.leadership.store.holder()
    assert holder is not None and (holder.replica, holder.epoch) == (leader.leadership.replica, term.epoch)
    history = await leader.leadership.store.history()
    assert [entry["epoch"] for entry in history] == [term.epoch]
    assert history[0]["reason"] in ("start", "takeover")


async def test_a_standby_takes_over_a_lease_after_the_leaders_loop_died(start):
    a, b = start("a"), start("b")
    leader, term = await first_leader(a, b)
    other = b if leader is a else a
    killed = time.monotonic()
    leader.kill()
    _, new_term = await first_leader(other, within_s=FAST.lease_s + FAST.standby_poll_s + SLACK_S)
    took_s = time.monotonic() - killed
    assert took_s > FAST.lease_s - FAST.renew_interval_s - 0.1  # it did wait for the lease to expire
    assert new_term.epoch > term.epoch
    assert term.lost.is_set() and term.reason == "stopped" and not leader.leadership.valid()
    assert (await other.leadership.store.history())[0]["reason"] == "takeover"


async def test_a_release_hands_the_lease_over_within_a_poll_and_for_good(start):
    a, b = start("a"), start("b")
    leader, term = await first_leader(a, b)
    other = b if leader is a else a
    released = time.monotonic()
    await leader.leadership.release()
    assert term.lost.is_set() and term.reason == "released" and not leader.leadership.valid()
    _, new_term = await first_leader(other, within_s=FAST.standby_poll_s + SLACK_S)
    assert time.monotonic() - released < FAST.standby_poll_s + SLACK_S
    assert new_term.epoch > term.epoch
    other.kill()  # nobody renews now: the released replica must still not take it back
    await asyncio.sleep(FAST.lease_s + 3 * FAST.standby_poll_s)
    assert leader.leadership.term is None
    assert await leader.leadership.store.holder() is None


async def test_a_woken_standby_tries_at_once(start):
    slow_poll = ClusterConfig(lease_s=1.0, renew_interval_s=0.25, standby_poll_s=30)
    a = start("a")
    _, term = await first_leader(a)
    b = start("b", slow_poll)
    await asyncio.sleep(0.2)  # b tried once and was refused; its next try is 30 s away
    await a.leadership.release()
    b.leadership.wake()
    _, new_term = await first_leader(b, within_s=SLACK_S)
    assert new_term.epoch > term.epoch


async def test_a_leader_whose_clock_passed_its_deadline_is_invalid_at_once_and_steps_down(start):
    a = start("a")
    _, term = await first_leader(a)
    assert a.leadership.valid()
    a.offset[0] = FAST.lease_s  # as after a freeze the loop has not run since
    assert not a.leadership.valid()
    assert await lost_within(term, FAST.renew_interval_s + SLACK_S) == RENEW_FAILED
    # nobody else took the lease: the same replica leads again, under a new epoch that fences the old term
    _, again = await first_leader(a, within_s=FAST.standby_poll_s + SLACK_S)
    assert again.epoch > term.epoch and a.leadership.valid()
    assert (await a.leadership.store.history())[0]["reason"] == "again"


async def test_a_frozen_leader_is_invalid_the_moment_it_runs_again(start):
    """The whole event loop blocked past the lease (as a SIGSTOP of the process): the first thing that runs
    after it sees valid() false, and the loop steps down before renewing anything."""
    a = start("a")
    _, term = await first_leader(a)
    time.sleep(FAST.lease_s + 0.1)  # blocks the loop on purpose: the process frozen
    assert not a.leadership.valid()
    assert await lost_within(term, SLACK_S) == RENEW_FAILED


async def test_a_leader_whose_lease_was_taken_steps_down_and_stands_by(start, redis_client):
    a = start("a")
    _, term = await first_leader(a)
    await redis_client.set(KEYS.leader_epoch, term.epoch + 1)
    await redis_client.set(KEYS.leader, f"x {term.epoch + 1} 1", px=5000)
    assert await lost_within(term, FAST.renew_interval_s + SLACK_S) == EPOCH_MOVED
    assert not a.leadership.valid()
    await asyncio.sleep(3 * FAST.standby_poll_s)
    assert a.leadership.term is None  # x holds it
    assert await redis_client.get(KEYS.leader) == f"x {term.epoch + 1} 1"


async def test_a_leader_whose_renews_get_no_answer_steps_down_at_its_deadline(start, redis_client):
    a = start("a")
    _, term = await first_leader(a)
    paused = time.monotonic()
    await redis_client.execute_command("CLIENT", "PAUSE", str(int(FAST.lease_s * 2000)), "ALL")
    try:
        assert await lost_within(term, FAST.lease_s + SLACK_S) == RENEW_FAILED
        assert time.monotonic() - paused < FAST.lease_s  # at its local deadline, before the lease's end in Redis
    finally:
        await redis_client.execute_command("CLIENT", "UNPAUSE")
    _, again = await first_leader(a, within_s=FAST.standby_poll_s + SLACK_S)
    assert again.epoch > term.epoch


async def test_acquired_gives_a_new_term_each_time(start, redis_client):
    a = start("a")
    terms = []
    for _ in range(3):
        term = await asyncio.wait_for(a.leadership.acquired(), 2)
        assert await a.leadership.acquired() is term  # while it lasts: the same term
        terms.append(term)
        a.leadership.step_down("fenced")
        assert term.lost.is_set() and term.reason == "fenced"
    assert [t.epoch for t in terms] == sorted({t.epoch for t in terms})


async def test_takeover_after_a_leader_died_with_production_like_timings(start):
    """The figure: from a leader's loop dying to the standby's term, with lease 2 s, renew 0.5 s, poll 0.25 s."""
    config = ClusterConfig(lease_s=2.0, renew_interval_s=0.5, standby_poll_s=0.25)
    a, b = start("a", config), start("b", config)
    leader, _ = await first_leader(a, b)
    other = b if leader is a else a
    await asyncio.sleep(0.3)
    killed = time.monotonic()
    leader.kill()
    await first_leader(other, within_s=config.lease_s + config.standby_poll_s + SLACK_S)
    took_s = time.monotonic() - killed
    print(f"takeover after the leader's loop died: {took_s:.3f} s (lease 2 s, poll 0.25 s)")
    assert config.lease_s - config.renew_interval_s - 0.1 < took_s < config.lease_s + config.standby_poll_s + SLACK_S
