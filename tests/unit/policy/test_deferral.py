"""``Deferrals``: a task whose file's holder does not answer is tried again on the backoff schedule, and fails
past the give-up time."""
from __future__ import annotations

from comfyart.policy.backoff import Backoff
from comfyart.policy.deferral import Deferrals


def deferrals() -> Deferrals:
    return Deferrals(backoff=Backoff(first_s=2.0, max_s=8.0, jitter=0.0), give_up_s=30.0)


def test_a_task_never_put_off_is_due():
    assert deferrals().due("t", 0.0)


def test_each_wait_doubles_up_to_the_cap_and_others_stay_due():
    waits = deferrals()
    expected_not_before = [10.0 + 2.0, 12.0 + 4.0, 16.0 + 8.0, 24.0 + 8.0]
    now = 10.0
    for not_before in expected_not_before:
        assert waits.defer("t", now, rand=0.5)
        assert not waits.due("t", not_before - 0.01) and waits.due("t", not_before)
        assert waits.due("other", now)
        now = not_before
    assert waits.waits["t"][1] == 4


def test_past_the_give_up_time_it_fails_and_is_forgotten():
    waits = deferrals()
    assert waits.defer("t", 0.0, rand=0.0)
    assert waits.defer("t", 29.9, rand=0.0)
    assert not waits.defer("t", 30.0, rand=0.0)
    assert "t" not in waits.waits and waits.due("t", 30.0)


def test_forgotten_after_it_ran_a_later_problem_starts_a_new_wait():
    waits = deferrals()
    waits.defer("t", 0.0, rand=0.0)
    waits.forget("t")
    assert waits.due("t", 0.5)
    assert waits.defer("t", 100.0, rand=0.0) and waits.waits["t"] == (100.0, 1, 102.0)
