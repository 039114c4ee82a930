"""Health thresholds, static backends out of reach, and recycling (policy.health): after_health_check,
static_backend_lost and recycle_reason."""
from __future__ import annotations

import pytest

from comfyart.policy.health import (
    HealthCount,
    Recycle,
    after_health_check,
    probe_due,
    recycle_reason,
    static_backend_lost,
)


@pytest.mark.parametrize("start, results, expected_healthy", [
    (HealthCount(True), [False, False], True),
    (HealthCount(True), [False, False, False], False),
    (HealthCount(True), [False, False, True, False, False], True),
    (HealthCount(False), [True], False),
    (HealthCount(False), [True, True], True),
    (HealthCount(False), [True, False, True], False),
    (HealthCount(False), [False, False, False, False, True, True], True),
])
def test_health_thresholds(start, results, expected_healthy):
    count = start
    for ok in results:
        count = after_health_check(count, ok, unhealthy_threshold=3, healthy_threshold=2)
    assert count.healthy is expected_healthy


def test_health_counts_reset_on_the_other_outcome():
    count = after_health_check(HealthCount(True, failures=2), True, unhealthy_threshold=3, healthy_threshold=1)
    assert count == HealthCount(True, 0, 1)
    count = after_health_check(HealthCount(False, successes=1), False, unhealthy_threshold=3, healthy_threshold=2)
    assert count == HealthCount(False, 1, 0)


@pytest.mark.parametrize("kwargs, expected", [
    (dict(tasks_done=0, age_s=0, unhealthy_s=None), None),
    (dict(tasks_done=10, age_s=0, unhealthy_s=None), Recycle.DRAIN),
    (dict(tasks_done=9, age_s=0, unhealthy_s=None), None),
    (dict(tasks_done=0, age_s=3600, unhealthy_s=None), Recycle.DRAIN),
    (dict(tasks_done=0, age_s=0, unhealthy_s=60), Recycle.NOW),
    (dict(tasks_done=0, age_s=0, unhealthy_s=59), None),
    (dict(tasks_done=10, age_s=0, unhealthy_s=60), Recycle.NOW),
])
def test_recycle_reason(kwargs, expected):
    verdict = recycle_reason(**kwargs, max_tasks=10, max_age_s=3600, replace_unhealthy_after_s=60)
    assert (verdict[0] if verdict else None) is expected
    if verdict:
        assert verdict[1]


def test_recycle_limits_of_zero_mean_never():
    assert recycle_reason(tasks_done=10 ** 6, age_s=10 ** 9, unhealthy_s=None, max_tasks=0, max_age_s=0,
                          replace_unhealthy_after_s=60) is None


@pytest.mark.parametrize("failed_checks", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("holds_prompts", [True, False])
@pytest.mark.parametrize("silent_s", [0.0, 19.9, 20.0, 20.1, 3600.0])
@pytest.mark.parametrize("lost_after_s", [0.0, 20.0])
def test_a_static_backend_loses_its_prompts_only_when_unhealthy_and_silent_long_enough(failed_checks, holds_prompts,
                                                                                      silent_s, lost_after_s):
    lost = static_backend_lost(failed_checks=failed_checks, unhealthy_threshold=3, silent_s=silent_s,
                               holds_prompts=holds_prompts, lost_after_s=lost_after_s)
    expected = (failed_checks >= 3 and holds_prompts and lost_after_s > 0 and silent_s >= lost_after_s)
    assert lost is expected


def test_one_slow_check_does_not_lose_a_static_backends_prompts():
    """One health check that timed out, after which the socket heard nothing (a long node without progress frames):
    the health policy still counts the backend healthy, so however long the silence, its prompts stay; they go once
    the failures make it unhealthy."""
    count = HealthCount(True)
    for failures in (1, 2, 3):
        count = after_health_check(count, False, unhealthy_threshold=3, healthy_threshold=1)
        lost = static_backend_lost(failed_checks=count.failures, unhealthy_threshold=3, silent_s=3600.0,
                                   holds_prompts=True, lost_after_s=30.0)
        assert lost is (not count.healthy) is (failures == 3)


def test_a_static_backend_that_answers_its_socket_keeps_its_prompts():
    """Unhealthy while the socket was heard a moment ago (ComfyUI's HTTP stalls while previews stream): the
    caller's silence is the socket's, short, and the prompts stay."""
    assert not static_backend_lost(failed_checks=3, unhealthy_threshold=3, silent_s=1.0, holds_prompts=True,
                                   lost_after_s=20.0)
    assert static_backend_lost(failed_checks=3, unhealthy_threshold=3, silent_s=20.0, holds_prompts=True,
                               lost_after_s=20.0)


@pytest.mark.parametrize(("healthy", "must_answer", "heard_ago_s", "answered_ago_s", "due"), [
    (True, False, 1.0, 5.0, False),  # busy and heard: its socket says it is alive
    (True, False, 1.0, 30.0, True),  # but its VRAM figures are refreshed every STATS_EVERY intervals
    (True, False, 6.0, 5.0, True),  # silent for more than an interval (an idle ComfyUI sends nothing)
    (True, False, None, 1.0, True),  # no socket yet
    (True, True, 0.1, 0.1, True),  # a stuck prompt, or prompts to take off it: it must answer
    (False, False, 0.1, 0.1, True),  # unhealthy: asked every round, to come back
    (True, False, 5.0, 29.9, False),  # heard exactly an interval ago
])
def test_a_backend_heard_on_its_socket_is_probed_less_often(healthy, must_answer, heard_ago_s, answered_ago_s, due):
    assert probe_due(healthy=healthy, must_answer=must_answer, heard_ago_s=heard_ago_s,
                     answered_ago_s=answered_ago_s, interval_s=5.0) is due
