"""Pure decisions: where a container goes, what to do after an uncertain submission, whether a failed attempt is
retried, how far along a prompt is. No I/O, no clock, no randomness. (How many containers to run is
``autoscale``'s; which backend takes which task is ``scheduling``'s.)
"""
from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class HostView:
    name: str
    ports: tuple[int, int]
    gpus: tuple[int, ...]
    used_ports: frozenset[int]
    used_gpus: frozenset[int]
    containers: int
    available: bool = True


@dataclass(frozen=True)
class Placement:
    host: str
    port: int
    gpu: int | None


def place_container(hosts: Sequence[HostView]) -> Placement | None:
    """The host with the fewest containers that still has a free port (and a free GPU where GPUs are listed);
    ties go to the host listed first. Returns None when every host is full."""
    best: tuple[int, int, Placement] | None = None
    for order, host in enumerate(hosts):
        if not host.available:
            continue
        port = next((p for p in range(host.ports[0], host.ports[1] + 1) if p not in host.used_ports), None)
        if port is None:
            continue
        gpu: int | None = None
        if host.gpus:
            gpu = next((g for g in host.gpus if g not in host.used_gpus), None)
            if gpu is None:
                continue
        key = (host.containers, order)
        if best is None or key < best[:2]:
            best = (host.containers, order, Placement(host.name, port, gpu))
    return best[2] if best else None


class AfterUncertainSubmit(enum.Enum):
    TRACK = "track"  # the backend has the prompt: follow it, never submit again
    RESUBMIT = "resubmit"  # the backend never saw it: safe to queue the task again


def after_uncertain_submit(*, in_history: bool, in_queue: bool) -> AfterUncertainSubmit:
    """After a submission whose answer was lost, /history and /queue decide: a prompt found in either
    was accepted, and submitting it again would run it twice."""
    if in_history or in_queue:
        return AfterUncertainSubmit.TRACK
    return AfterUncertainSubmit.RESUBMIT


class AttemptEnd(enum.Enum):
    """How an attempt (one submission of a task to one backend) ended without a result."""

    BACKEND_LOST = "backend_lost"  # the container died, its host went away, or it was replaced
    TIMED_OUT = "timed_out"  # still unfinished after task_timeout
    VANISHED = "vanished"  # the backend forgot the prompt (restarted): in neither /history nor /queue
    NOT_ACCEPTED = "not_accepted"  # the submission or an input upload failed before the backend took it
    WORKFLOW_ERROR = "workflow_error"  # rejected at validation, or a node raised: the graph's own fault
    INTERRUPTED = "interrupted"  # someone interrupted it on the backend


RETRYABLE = frozenset({AttemptEnd.BACKEND_LOST, AttemptEnd.TIMED_OUT, AttemptEnd.VANISHED,
                       AttemptEnd.NOT_ACCEPTED})


def should_retry(end: AttemptEnd, *, attempts: int, max_retries: int) -> bool:
    """Faults of the backend are retried, on another backend, until the task has had ``max_retries`` retries
    (``attempts`` counts submissions so far, the first included); faults of the workflow never are: they would
    fail the same way anywhere."""
    return end in RETRYABLE and attempts <= max_retries


def prompt_progress(*, total_nodes: int, cached_nodes: int, finished_nodes: int, step: float | None,
                    step_max: float | None) -> float:
    """Fraction of a prompt done, from 0.0 to 1.0: cached nodes count as done, the running node counts by its
    own step progress."""
    if total_nodes <= 0:
        return 0.0
    running_fraction = 0.0
    if step is not None and step_max:
        running_fraction = max(0.0, min(1.0, step / step_max))
    done = min(total_nodes, cached_nodes + finished_nodes) + running_fraction
    return round(max(0.0, min(1.0, done / total_nodes)), 4)


def webhook_next_attempt(*, attempt: int, status: int | None, max_attempts: int, backoff_s: float,
                         backoff_max_s: float) -> float | None:
    """After delivery attempt ``attempt`` (1 = the first) answered ``status`` (None: no answer at all): None when
    it is done (delivered, or given up after ``max_attempts``), else the seconds to wait before the next one.
    Any answer other than 2xx is retried: a receiver that is down often answers 502 or 503 from its proxy."""
    if status is not None and 200 <= status < 300:
        return None
    if attempt >= max_attempts:
        return None
    return min(backoff_max_s, backoff_s * 2 ** (attempt - 1))


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
