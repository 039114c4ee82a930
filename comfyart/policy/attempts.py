"""Pure decisions: where a container goes, what to do after an uncertain submission, whether a failed attempt is
retried, how far along a prompt is. No I/O, no clock, no randomness. (How many containers to run is
``autoscale``'s; which backend takes which task is ``scheduling``'s.)
"""
from __future__ import annotations

import enum


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
    STALE_INVENTORY = "stale_inventory"  # rejected for a model or node it no longer has: another backend may
    WORKFLOW_ERROR = "workflow_error"  # rejected at validation, or a node raised: the graph's own fault
    INTERRUPTED = "interrupted"  # someone interrupted it on the backend


RETRYABLE = frozenset({AttemptEnd.BACKEND_LOST, AttemptEnd.TIMED_OUT, AttemptEnd.VANISHED,
                       AttemptEnd.NOT_ACCEPTED, AttemptEnd.STALE_INVENTORY})


def should_retry(end: AttemptEnd, *, attempts: int, max_retries: int) -> bool:
    """Faults of the backend are retried, on another backend, until the task has had ``max_retries`` retries
    (``attempts`` counts submissions so far, the first included); faults of the workflow never are: they would
    fail the same way anywhere."""
    return end in RETRYABLE and attempts <= max_retries


PROGRESS_DECIMALS = 4  # a task's progress is kept to this many decimals


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
    return round(max(0.0, min(1.0, done / total_nodes)), PROGRESS_DECIMALS)
