"""The task model (models): the statuses and the transitions between them."""
from __future__ import annotations

from comfyart.models import TRANSITIONS, TaskStatus, sources_of


def test_final_statuses_have_no_way_out():
    for status in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELED):
        assert TRANSITIONS[status] == frozenset()
    assert TaskStatus.COMPLETED not in TRANSITIONS[TaskStatus.COMPLETED]
    assert set(sources_of(TaskStatus.RUNNING)) == {TaskStatus.PENDING}
    assert set(sources_of(TaskStatus.COMPLETED)) == {TaskStatus.PENDING, TaskStatus.RUNNING}
