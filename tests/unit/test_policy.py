from __future__ import annotations

import pytest

from comfyart.policy.attempts import (
    AfterUncertainSubmit,
    AttemptEnd,
    after_uncertain_submit,
    prompt_progress,
    should_retry,
)
from comfyart.policy.placement import HostView, Placement, place_container


def host(name, ports=(100, 102), gpus=(), used_ports=(), used_gpus=(), containers=None, available=True):
    return HostView(name, ports, tuple(gpus), frozenset(used_ports), frozenset(used_gpus),
                    len(used_ports) if containers is None else containers, available)


@pytest.mark.parametrize("hosts, expected", [
    pytest.param([host("a")], Placement("a", 100, None), id="first free port"),
    pytest.param([host("a", used_ports=[100])], Placement("a", 101, None), id="skips a used port"),
    pytest.param([host("a", used_ports=[100]), host("b")], Placement("b", 100, None), id="fewest containers wins"),
    pytest.param([host("a"), host("b")], Placement("a", 100, None), id="tie goes to the first host"),
    pytest.param([host("a", used_ports=[100, 101, 102]), host("b", used_ports=[100, 101])],
                 Placement("b", 102, None), id="a full host is skipped even with fewer... containers"),
    pytest.param([host("a", used_ports=[100, 101, 102])], None, id="no free port anywhere"),
    pytest.param([host("a", gpus=[0, 1], used_ports=[100], used_gpus=[0])], Placement("a", 101, 1),
                 id="next free gpu"),
    pytest.param([host("a", gpus=[0], used_ports=[100], used_gpus=[0]), host("b", gpus=[3], used_ports=[100, 101],
                                                                             used_gpus=[])],
                 Placement("b", 102, 3), id="a host without a free gpu is full"),
    pytest.param([host("a", gpus=[0], used_ports=[100], used_gpus=[0])], None, id="gpus exhausted"),
    pytest.param([host("a", available=False), host("b", used_ports=[100, 101])], Placement("b", 102, None),
                 id="an unavailable host is skipped"),
    pytest.param([], None, id="no hosts"),
])
def test_place_container(hosts, expected):
    assert place_container(hosts) == expected


@pytest.mark.parametrize("in_history, in_queue, expected", [
    (True, False, AfterUncertainSubmit.TRACK), (False, True, AfterUncertainSubmit.TRACK),
    (True, True, AfterUncertainSubmit.TRACK), (False, False, AfterUncertainSubmit.RESUBMIT),
])
def test_after_uncertain_submit_never_submits_a_known_prompt_again(in_history, in_queue, expected):
    assert after_uncertain_submit(in_history=in_history, in_queue=in_queue) is expected


@pytest.mark.parametrize("end", list(AttemptEnd))
@pytest.mark.parametrize("attempts, max_retries", [(1, 0), (1, 2), (2, 2), (3, 2), (4, 2), (1, 1), (2, 1)])
def test_should_retry_backend_faults_until_retries_are_spent_and_workflow_faults_never(end, attempts, max_retries):
    retryable = end in (AttemptEnd.BACKEND_LOST, AttemptEnd.TIMED_OUT, AttemptEnd.VANISHED, AttemptEnd.NOT_ACCEPTED)
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
