"""How long a Comfy API v2 job is kept (``api_v2.job_retention_s``), decided from its record and the time. Pure.

Decisions: a job that has not ended is never expired, however long it waits or runs. A finished job's deadline
is its end + the retention; an unfinished one shows ``now`` + the retention, the earliest it could be (it grows
until the job ends). Past the deadline the job is expired: the sweep (``sweeps.jobs``) removes its outputs and
marks the record (``expired_ms``), which keeps it expired whatever the retention becomes later."""
from __future__ import annotations

from comfyart.models import FINAL_STATUSES, Task


def expires_at_ms(task: Task, *, now_ms: int, retention_s: int) -> int:
    """The job's retention deadline (epoch ms): its end + ``retention_s`` once it ended, else an estimate: ``now``
    + ``retention_s``."""
    if task.status in FINAL_STATUSES:
        ended = task.finished_ms if task.finished_ms is not None else task.updated_ms
        return ended + retention_s * 1000
    return max(now_ms, task.created_ms) + retention_s * 1000


def is_expired(task: Task, *, now_ms: int, retention_s: int) -> bool:
    """Whether the job answers ``expired``: marked so by the sweep, or ended and past its deadline."""
    if task.expired_ms is not None:
        return True
    return task.status in FINAL_STATUSES and now_ms >= expires_at_ms(task, now_ms=now_ms, retention_s=retention_s)


def oldest_created_to_check(now_ms: int, retention_s: int) -> int:
    """The sweep looks at jobs created at or before this: a job ends after it was created, so one created later
    cannot be past its deadline yet."""
    return now_ms - retention_s * 1000
