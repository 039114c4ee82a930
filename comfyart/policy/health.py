"""How health checks move a backend between healthy and unhealthy, when a static backend out of reach loses its
prompts, and when a container is recycled."""
from __future__ import annotations

import enum
from dataclasses import dataclass

# ---------------------------------------------------------------------------------------------- health


@dataclass(frozen=True)
class HealthCount:
    healthy: bool
    failures: int = 0  # consecutive failed checks
    successes: int = 0  # consecutive good checks


def after_health_check(current: HealthCount, ok: bool, *, unhealthy_threshold: int,
                       healthy_threshold: int) -> HealthCount:
    """``unhealthy_threshold`` failed checks in a row make a healthy backend unhealthy; ``healthy_threshold``
    good ones in a row bring it back. One good check resets the failure count and vice versa."""
    if ok:
        successes = current.successes + 1
        return HealthCount(current.healthy or successes >= healthy_threshold, 0, successes)
    failures = current.failures + 1
    return HealthCount(current.healthy and failures < unhealthy_threshold, failures, 0)


STATS_EVERY = 6  # a backend heard on its socket is still asked for /system_stats every this many intervals


def probe_due(*, healthy: bool, must_answer: bool, heard_ago_s: float | None, answered_ago_s: float,
              interval_s: float) -> bool:
    """Whether a backend is asked for /system_stats this round. A healthy one whose WebSocket carried a frame
    within the last interval is alive (its ComfyUI serves both on one event loop), and is asked only every
    ``STATS_EVERY`` intervals, for fresh VRAM figures: on a busy fleet of 1,000 that is most of the checks' cost.
    One that is unhealthy, silent, or must answer (a prompt stuck on it, prompts to take off it) is asked each
    round."""
    if not healthy or must_answer or heard_ago_s is None or heard_ago_s > interval_s:
        return True
    return answered_ago_s >= STATS_EVERY * interval_s


def static_backend_lost(*, failed_checks: int, unhealthy_threshold: int, silent_s: float, holds_prompts: bool,
                        lost_after_s: float) -> bool:
    """Whether a static backend's prompts are given up for lost (and requeued elsewhere): it holds some, its last
    ``unhealthy_threshold`` health checks failed (``failed_checks`` in a row: what makes a backend unhealthy; one
    slow check is not enough, nor is the unhealthy state a backend starts in), and neither a good check nor a frame
    on its WebSocket came for ``lost_after_s`` (``silent_s``). ``lost_after_s`` of 0 means never: its prompts wait
    for ``task_timeout_s``. comfyart does not run a static backend, so the backend itself stays in the pool; only
    its prompts move."""
    if lost_after_s <= 0 or not holds_prompts or failed_checks < unhealthy_threshold:
        return False
    return silent_s >= lost_after_s


class Recycle(enum.Enum):
    DRAIN = "drain"  # let its prompts finish, then replace it
    NOW = "now"  # replace it at once; its prompts go back to the queue


def recycle_reason(*, tasks_done: int, age_s: float, unhealthy_s: float | None, max_tasks: int,
                   max_age_s: float, replace_unhealthy_after_s: float) -> tuple[Recycle, str] | None:
    """Whether a managed container should be replaced, and why. ``max_tasks``/``max_age_s`` of 0 mean never;
    ``unhealthy_s`` is how long it has been unhealthy (None while healthy)."""
    if unhealthy_s is not None and unhealthy_s >= replace_unhealthy_after_s:
        return Recycle.NOW, f"unhealthy for {unhealthy_s:.0f} s"
    if max_tasks and tasks_done >= max_tasks:
        return Recycle.DRAIN, f"served {tasks_done} tasks (max_tasks {max_tasks})"
    if max_age_s and age_s >= max_age_s:
        return Recycle.DRAIN, f"up {age_s:.0f} s (max_age {max_age_s:g} s)"
    return None
