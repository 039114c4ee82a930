"""The timing of leadership (``cluster.leadership``): how long a term stays valid after each renew, when the next
renew is due, when a leader must step down, and how long a standby waits before trying again.

Times are seconds of one local clock that keeps counting while the process is stopped (``CLOCK_BOOTTIME``): a
leader frozen past its lease finds its deadline passed the moment it runs again. A term is valid until
``sent + lease_s - margin``, where ``sent`` is when the last successful renew (or the acquire) was *sent*: Redis
extends the lease when it receives the command, later than that, so the leader's deadline always falls before
the lease's end in Redis, by the margin at least (it absorbs a clock running slower here than Redis's).
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

MAX_MARGIN_S = 0.5
RENEW_RETRY_S = 0.2  # after a renew that got no answer: try again this soon, until the deadline

EPOCH_MOVED = "epoch moved"  # Redis answered no: another replica took the lease (or it expired and was taken)
RENEW_FAILED = "renew failed"  # the deadline passed without a renew answered yes (Redis away, process frozen)


class RenewOutcome(Enum):
    RENEWED = "renewed"  # Redis holds this term's lease, extended
    REFUSED = "refused"  # Redis holds another term (or nobody, and the epoch moved): the term is over
    UNANSWERED = "unanswered"  # Redis away, or no answer in time: the lease may or may not have been extended


@dataclass(frozen=True)
class Lead:
    """Still leading: valid until ``valid_until``; the next renew is due at ``renew_at``."""

    valid_until: float
    renew_at: float


@dataclass(frozen=True)
class StepDown:
    reason: str


def margin_s(lease_s: float) -> float:
    """How much earlier than the lease's end in Redis the leader stops trusting its term."""
    return min(MAX_MARGIN_S, lease_s / 10)


def valid_until(sent_at: float, lease_s: float) -> float:
    """The local deadline of a term whose lease was taken or renewed by a command sent at ``sent_at``."""
    return sent_at + lease_s - margin_s(lease_s)


def still_valid(now: float, deadline: float) -> bool:
    return now < deadline


def first_lead(sent_at: float, now: float, *, lease_s: float, renew_interval_s: float) -> Lead | StepDown:
    """The term an acquire sent at ``sent_at`` and answered yes at ``now`` begins (or, answered too late to be
    trusted, the term that is already over)."""
    deadline = valid_until(sent_at, lease_s)
    if not still_valid(now, deadline):
        return StepDown(RENEW_FAILED)
    return Lead(deadline, sent_at + renew_interval_s)


def leader_wait(now: float, lead: Lead) -> float | StepDown:
    """Before renewing: step down when the deadline passed; else how long to wait first (0: renew now)."""
    if not still_valid(now, lead.valid_until):
        return StepDown(RENEW_FAILED)
    return max(0.0, min(lead.renew_at, lead.valid_until) - now)


def renew_timeout_s(now: float, lead: Lead) -> float:
    """A renew waits for its answer no longer than the term is valid: past that its answer changes nothing."""
    return max(0.0, lead.valid_until - now)


def after_renew(outcome: RenewOutcome, *, sent_at: float, now: float, lead: Lead, lease_s: float,
                renew_interval_s: float) -> Lead | StepDown:
    """The term after a renew sent at ``sent_at`` came back (or gave up) at ``now``."""
    if outcome is RenewOutcome.REFUSED:
        return StepDown(EPOCH_MOVED)
    if outcome is RenewOutcome.RENEWED:
        deadline = max(lead.valid_until, valid_until(sent_at, lease_s))
        if not still_valid(now, deadline):  # answered, but after a freeze longer than the lease
            return StepDown(RENEW_FAILED)
        return Lead(deadline, sent_at + renew_interval_s)
    if not still_valid(now, lead.valid_until):
        return StepDown(RENEW_FAILED)
    return Lead(lead.valid_until, min(now + min(RENEW_RETRY_S, renew_interval_s), lead.valid_until))


def standby_wait(now: float, last_try_at: float | None, *, poll_s: float, woken: bool) -> float:
    """How long a standby waits before its next try to take the lease: none when woken (a leader released it)
    or never tried; else until ``poll_s`` after its last try."""
    if woken or last_try_at is None:
        return 0.0
    return max(0.0, last_try_at + poll_s - now)


def election_reason(*, terms_before: int, refused_since_last_term: bool) -> str:
    """What the elections history says of a term this replica begins: its first ("start"), after another
    replica's term ("takeover"), or after its own ended with nobody else leading meanwhile ("again")."""
    if refused_since_last_term:
        return "takeover"
    return "start" if terms_before == 0 else "again"
