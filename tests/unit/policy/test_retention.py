"""The v2 retention decision: a finished job expires at its end + the retention, an unfinished one never; the
sweep's mark keeps a job expired; the sweep looks only at jobs old enough to be due."""
from __future__ import annotations

import pytest

from comfyart.models import FINAL_STATUSES, TaskStatus
from comfyart.policy.retention import expires_at_ms, is_expired, oldest_created_to_check
from tests.support.tasks import make_task

MINUTE_S = 60


@pytest.mark.parametrize("status", sorted(FINAL_STATUSES))
def test_a_finished_job_expires_at_its_end_plus_the_retention(status):
    task = make_task(status=status, created_ms=1000, finished_ms=5000)
    assert expires_at_ms(task, now_ms=9999, retention_s=MINUTE_S) == 65_000
    assert not is_expired(task, now_ms=64_999, retention_s=MINUTE_S)
    assert is_expired(task, now_ms=65_000, retention_s=MINUTE_S)


def test_a_finished_job_without_an_end_time_counts_from_its_last_change():
    task = make_task(status=TaskStatus.CANCELED, finished_ms=None, updated_ms=7000)
    assert expires_at_ms(task, now_ms=0, retention_s=MINUTE_S) == 67_000


@pytest.mark.parametrize("status", [TaskStatus.PENDING, TaskStatus.RUNNING])
@pytest.mark.parametrize("now", [0, 1000, 10**9, 10**13])
def test_a_job_that_has_not_ended_is_never_expired_and_its_deadline_is_an_estimate(status, now):
    task = make_task(status=status, created_ms=1000, finished_ms=None)
    assert not is_expired(task, now_ms=now, retention_s=MINUTE_S)
    assert expires_at_ms(task, now_ms=now, retention_s=MINUTE_S) == max(now, 1000) + 60_000


@pytest.mark.parametrize("status", list(TaskStatus))
def test_the_sweeps_mark_keeps_a_job_expired(status):
    task = make_task(status=status, expired_ms=4000)
    assert is_expired(task, now_ms=0, retention_s=365 * 24 * 3600)


def test_only_jobs_created_a_retention_ago_can_be_due():
    assert oldest_created_to_check(100_000, MINUTE_S) == 40_000
    task = make_task(created_ms=40_001, finished_ms=40_001)
    assert not is_expired(task, now_ms=100_000, retention_s=MINUTE_S)
