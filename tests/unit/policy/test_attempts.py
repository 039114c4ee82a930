"""What an attempt's end decides (policy.attempts): a retry or not, what to do after an uncertain submission, and a
prompt's progress."""
from __future__ import annotations

import pytest

from comfyart.policy.attempts import (
    AfterUncertainSubmit,
    AttemptEnd,
    after_uncertain_submit,
    prompt_progress,
    should_retry,
)


@pytest.mark.parametrize("in_history, in_queue, expected", [
    (True, False, AfterUncertainSubmit.TRACK), (False, True, AfterUncertainSubmit.TRACK),
    (True, True, AfterUncertainSubmit.TRACK), (False, False, AfterUncertainSubmit.RESUBMIT),
])
def test_after_uncertain_submit_never_submits_a_known_prompt_again(in_history, in_queue, expected):
    assert after_uncertain_submit(in_history=in_history, in_queue=in_queue) is expected


@pytest.mark.parametrize("end", list(AttemptEnd))
@pytest.mark.parametrize("attempts, max_retries", [(1, 0), (1, 2), (2, 2), (3, 2), (4, 2), (1, 1), (2, 1)])
def test_should_retry_backend_faults_until_retries_are_spent_and_workflow_faults_never(end, attempts, max_retries):
    retryable = end in (AttemptEnd.BACKEND_LOST, AttemptEnd.TIMED_OUT, AttemptEnd.VANISHED, AttemptEnd.NOT_ACCEPTED,
                        AttemptEnd.STALE_INVENTORY)
    # attempts counts the first submission: max_retries=2 allows attempts 1, 2 and 3
    expected = retryable and attempts - 1 < max_retries
    assert should_retry(end, attempts=attempts, max_retries=max_retries) is expected


@pytest.mark.parametrize("total, cached, finished, step, step_max, expected", [
    (0, 0, 0, None, None, 0.0),
    (4, 0, 0, None, None, 0.0),
    (4, 2, 0, None, None, 0.5),
    (4, 0, 1, 10, 20, 0.375),
    (4, 0, 3, 20, 20, 1.0),
    (4, 4, 4, None, None, 1.0),
    (3, 0, 0, 5, 0, 0.0),
    (2, 0, 0, 30, 20, 0.5),
])
def test_prompt_progress(total, cached, finished, step, step_max, expected):
    assert prompt_progress(total_nodes=total, cached_nodes=cached, finished_nodes=finished, step=step,
                           step_max=step_max) == expected
