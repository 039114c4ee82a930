"""Which replica leads: a loop every replica runs (``Leadership.run``) over the lease in Redis (``store.lease``).

A standby tries to take the lease every ``cluster.standby_poll_s`` (at once when woken: a leader released it). The
leader renews it every ``cluster.renew_interval_s``; each term has a local deadline (``policy.leadership``: the
last renew's send time + ``lease_s`` - a margin), and the term ends when a renew is refused ("epoch moved"), when
the deadline passes unrenewed ("renew failed"), when ``step_down`` is called (a fenced write was refused), or on
``release`` (SIGTERM: the lease is deleted so a standby takes over at its next poll, not a lease later).

What the rest of the daemon uses: ``acquired()`` (a new ``Term`` each time this replica begins leading),
``term.lost`` (set when it ends, ``term.reason`` says why), and ``valid()``, checked right before a write Redis
cannot fence (a POST /prompt, a Docker call). Writes to Redis are fenced by the epoch (``term.epoch``) instead.

The clock is ``CLOCK_BOOTTIME`` where there is one: it keeps counting while the process is stopped (SIGSTOP) and
while the machine or VM is suspended, unlike ``CLOCK_MONOTONIC``; so a leader frozen past its lease answers
``valid()`` false the moment it runs again, before its loop has noticed, and the loop steps down first thing.
(asyncio's timers follow the monotonic clock: after a suspend the loop may run up to a renew interval late;
``valid()`` does not wait for it.)

Connections: the lease calls go through the lease store's own small pool, so a busy tracker holding the shared
pool cannot delay a renew; each call is bounded by the term's deadline (a renew) or by what a term would be worth
(an acquire: ``lease_s`` - margin).
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from loguru import logger

from comfyart.config.sections import ClusterConfig
from comfyart.errors import TransientError
from comfyart.policy import leadership as policy
from comfyart.store.lease import Lease, LeaseStore

RELEASE_WAIT_S = 2.0  # a release at shutdown waits no longer: then the lease expires on its own
RELEASED = "released"
STOPPED = "stopped"  # the leadership loop itself was cancelled: nothing renews the lease any more


def _said(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__  # a TimeoutError says nothing itself


def boot_clock() -> float:
    """Seconds of a clock that counts through SIGSTOP and suspend (``CLOCK_BOOTTIME``; monotonic elsewhere)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def _default_clock() -> Callable[[], float]:
    return boot_clock if hasattr(time, "CLOCK_BOOTTIME") else time.monotonic


@dataclass
class Term:
    """One term of this replica as leader. ``lost`` is set when it ends (stepped down, lease lost, released);
    ``reason`` says why."""

    epoch: int
    since_ms: int
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    reason: str | None = None


class Leadership:
    """The leadership of one replica (``replica``: its name in the lease). ``run`` is its loop; ``clock`` comes in
    so a test can freeze or jump time."""

    def __init__(self, store: LeaseStore, *, replica: str, config: ClusterConfig,
                 clock: Callable[[], float] | None = None) -> None:
        self.store, self.replica, self.config = store, replica, config
        self.clock = clock or _default_clock()
        self.term: Term | None = None
        self._lead: policy.Lead | None = None  # the current term's deadline and next renew
        self._leading = asyncio.Event()  # set exactly while ``term`` is a term not yet lost
        self._woken = asyncio.Event()
        self._lease_ops = asyncio.Lock()  # a release waits for a renew in flight: it must not re-set a lease after
        self._retired = False  # released: this replica never leads again (it is shutting down)
        self._last_try: float | None = None
        self._terms = 0
        self._refused = False  # another replica held the lease at a try since this replica's last term
        self._unreachable = False  # the last lease call got no answer (logged once per outage)
        self._releasing: asyncio.Task[None] | None = None
        self._unreleased: int | None = None  # the epoch of a term that ended when ``run`` was cancelled
        self._lease_ms = int(config.lease_s * 1000)

    # ------------------------------------------------------------------ what the daemon uses
    def valid(self) -> bool:
        """Leading now, and the term's local deadline not passed."""
        term, lead = self.term, self._lead
        return (term is not None and lead is not None and not term.lost.is_set()
                and policy.still_valid(self.clock(), lead.valid_until))

    async def acquired(self) -> Term:
        """The current term once this replica leads (after a term is lost, the next one)."""
        while True:
            await self._leading.wait()
            term = self.term
            if term is not None and not term.lost.is_set():
                return term
            await asyncio.sleep(0)  # not reached while the invariant of _leading holds; never spins regardless

    def step_down(self, reason: str) -> None:
        """End the current term now (the lease stays in Redis; it expires, or another epoch already replaced it)."""
        term = self.term
        if term is None:
            return
        self.term, self._lead = None, None
        self._leading.clear()
        term.reason = reason
        term.lost.set()
        self._last_try = self.clock()  # a standby again: its first try comes a poll later (or when woken)
        log = logger.info if reason in (RELEASED, STOPPED) else logger.warning
        log("stepped down epoch={} reason={}", term.epoch, reason)

    def wake(self) -> None:
        """A standby tries to take the lease at once (another replica released it)."""
        self._woken.set()

    async def release(self) -> None:
        """End the term and delete the lease, so a standby takes over at its next try (SIGTERM). Final: this
        replica does not lead again. Waits at most ``RELEASE_WAIT_S``, and finishes even if the caller is
        cancelled meanwhile. Idempotent: a second call (the daemon's close after its stop) does nothing more; a
        call after ``run`` was cancelled mid-term (a root task failed) still deletes that term's lease."""
        self._retired = True
        term, epoch, self._unreleased = self.term, self._unreleased, None
        if term is not None:
            self.step_down(RELEASED)
            epoch = term.epoch
        if epoch is None:
            return
        self._releasing = asyncio.create_task(self._release_lease(epoch), name="leadership release")
        await asyncio.shield(self._releasing)

    async def run(self) -> None:
        """Stand by until the lease is taken, hold it until the term ends, again, until cancelled."""
        try:
            while True:
                term = await self._stand_by()
                await self._hold(term)
        finally:
            if self.term is not None:
                self._unreleased = self.term.epoch
            self.step_down(STOPPED)

    # ------------------------------------------------------------------ standby
    async def _stand_by(self) -> Term:
        while True:
            if self._retired:
                await asyncio.Event().wait()  # parked until cancelled: a released replica does not lead again
            wait = policy.standby_wait(self.clock(), self._last_try, poll_s=self.config.standby_poll_s,
                                       woken=self._woken.is_set())
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._woken.wait(), wait)
                continue
            self._woken.clear()
            self._last_try = self.clock()
            term = await self._try_acquire()
            if term is not None:
                return term

    async def _try_acquire(self) -> Term | None:
        sent = self.clock()
        reason = policy.election_reason(terms_before=self._terms, refused_since_last_term=self._refused)
        try:
            async with asyncio.timeout(policy.valid_until(0.0, self.config.lease_s)):
                lease = await self.store.acquire(self.replica, self._lease_ms, reason)
        except (TimeoutError, TransientError) as exc:
            self._no_answer("acquire", exc)
            return None
        self._answered()
        if lease is None:
            await self._refused_by_holder()
            return None
        if self._retired:  # released while this acquire was on its way: give it straight back
            await self._release_lease(lease.epoch)
            return None
        return self._begin(lease, sent)

    def _begin(self, lease: Lease, sent: float) -> Term | None:
        step = policy.first_lead(sent, self.clock(), lease_s=self.config.lease_s,
                                 renew_interval_s=self.config.renew_interval_s)
        if isinstance(step, policy.StepDown):  # answered too late to trust; the next try takes it again
            logger.warning("lease taken too late to lead epoch={}", lease.epoch)
            return None
        term = Term(lease.epoch, lease.since_ms)
        self.term, self._lead = term, step
        self._terms += 1
        self._refused = False
        self._woken.clear()
        self._leading.set()
        logger.info("leading epoch={} since_ms={} replica={}", term.epoch, term.since_ms, self.replica)
        return term

    async def _refused_by_holder(self) -> None:
        if self._refused:
            return
        self._refused = True
        with contextlib.suppress(TransientError):
            holder = await self.store.holder()
            logger.info("standby leader={} epoch={}", holder.replica if holder else "-",
                        holder.epoch if holder else "-")

    # ------------------------------------------------------------------ leader
    async def _hold(self, term: Term) -> None:
        while self.term is term and self._lead is not None:
            step = policy.leader_wait(self.clock(), self._lead)
            if isinstance(step, policy.StepDown):
                self.step_down(step.reason)
                return
            if step > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(term.lost.wait(), step)
                continue
            await self._renew(term, self._lead)

    async def _renew(self, term: Term, lead: policy.Lead) -> None:
        sent = self.clock()
        outcome = policy.RenewOutcome.UNANSWERED
        try:
            async with asyncio.timeout(policy.renew_timeout_s(sent, lead)), self._lease_ops:
                if self.term is not term:  # released while waiting for the lock
                    return
                renewed = await self.store.renew(self.replica, term.epoch, self._lease_ms, since_ms=term.since_ms)
            outcome = policy.RenewOutcome.RENEWED if renewed else policy.RenewOutcome.REFUSED
            self._answered()
        except (TimeoutError, TransientError) as exc:
            self._no_answer("renew", exc)
        if self.term is not term:
            return
        step = policy.after_renew(outcome, sent_at=sent, now=self.clock(), lead=lead, lease_s=self.config.lease_s,
                                  renew_interval_s=self.config.renew_interval_s)
        if isinstance(step, policy.StepDown):
            self.step_down(step.reason)
        else:
            self._lead = step

    # ------------------------------------------------------------------ release and errors
    async def _release_lease(self, epoch: int) -> None:
        try:
            async with asyncio.timeout(RELEASE_WAIT_S), self._lease_ops:
                released = await self.store.release(self.replica, epoch)
        except (TimeoutError, TransientError) as exc:
            logger.warning("lease not released epoch={} error={}: it expires on its own", epoch, _said(exc))
            return
        logger.info("lease released epoch={} deleted={}", epoch, released)

    def _no_answer(self, call: str, exc: BaseException) -> None:
        if not self._unreachable:
            logger.warning("lease {} got no answer error={}", call, _said(exc))
        self._unreachable = True

    def _answered(self) -> None:
        if self._unreachable:
            logger.info("lease calls answered again")
        self._unreachable = False
