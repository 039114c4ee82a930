"""Backends found by DNS, decided: ids, URLs, which answers are believed, and the plan from the pool's members and
the answer."""
from __future__ import annotations

import itertools

import pytest

from comfyart.policy.discovery import Plan, address_of, addresses, backend_id, backend_url, believed, plan

A, B, C = "127.0.0.1", "127.0.0.2", "127.0.0.3"


def test_an_address_is_always_the_same_backend_whatever_the_names_case_or_final_dot():
    assert backend_id("ComfyUI.gpu.svc.cluster.local.", A) == "dns:comfyui.gpu.svc.cluster.local:127.0.0.1"
    assert address_of("comfyui.gpu.svc.cluster.local", backend_id("COMFYUI.gpu.svc.cluster.local", A)) == A
    assert address_of("comfyui.gpu.svc.cluster.local", backend_id("comfyui.gpu.svc.cluster.local", "::1")) \
        == "::1"


def test_a_backend_of_another_name_or_kind_is_not_the_names():
    assert address_of("comfyui", backend_id("comfyui-other", A)) is None
    assert address_of("comfyui", "static:comfyui") is None
    assert address_of("comfyui", "docker:gpu1:8188") is None


def test_urls_bracket_ipv6_and_carry_the_path():
    assert backend_url("http", A, 8188) == "http://127.0.0.1:8188"
    assert backend_url("https", "::1", 443, "/comfyui/") == "https://[::1]:443/comfyui"


def test_addresses_are_written_one_way():
    assert addresses(["127.0.0.1", "0:0:0::1", "127.0.0.1"]) == frozenset({A, "::1"})


@pytest.mark.parametrize(("answer", "empty_for_s", "expected"), [
    (None, 0.0, None),  # a failed lookup: keep everything
    (None, 99.0, None),
    (frozenset({A}), 0.0, frozenset({A})),  # an answer: acted on
    (frozenset(), 0.0, None),  # empty, just now: a blip
    (frozenset(), 29.9, None),
    (frozenset(), 30.0, frozenset()),  # empty for the whole grace: believed (scaled to zero)
])
def test_an_empty_answer_is_believed_only_after_the_grace(answer, empty_for_s, expected):
    assert believed(answer, empty_for_s=empty_for_s, grace_s=30.0) == expected


def test_with_no_grace_an_empty_answer_is_believed_at_once():
    assert believed(frozenset(), empty_for_s=0.0, grace_s=0.0) == frozenset()


def test_no_answer_changes_nothing():
    assert plan({A: False, B: True}, None) == Plan()
    assert not Plan().changes


def test_new_addresses_join_in_order_and_the_known_ones_stay():
    decided = plan({B: False}, frozenset({C, A, B}))
    assert decided == Plan(add=(A, C))
    assert decided.changes


def test_addresses_gone_drain_once():
    assert plan({A: False, B: False, C: True}, frozenset({A})) == Plan(drain=(B,))


def test_an_address_back_while_draining_rejoins():
    assert plan({A: True, B: False}, frozenset({A, B})) == Plan(rejoin=(A,))


def test_an_empty_believed_answer_drains_everything_still_active():
    assert plan({A: False, B: True, C: False}, frozenset()) == Plan(drain=(A, C))


ADDRESSES = (A, B, C)


@pytest.mark.parametrize("states", list(itertools.product((None, False, True), repeat=3)))
@pytest.mark.parametrize("answered", [frozenset(s) for n in range(4) for s in itertools.combinations(ADDRESSES, n)])
def test_every_case_ends_with_exactly_the_answer_taking_work(states, answered):
    """For every pool (each address absent, active or leaving) and every answer: after the plan, the addresses
    taking work are exactly the answer's, and the ones leaving exactly the rest of the pool's; nothing is added
    twice, nothing drained twice."""
    members = {a: leaving for a, leaving in zip(ADDRESSES, states, strict=True) if leaving is not None}
    decided = plan(members, answered)
    assert not set(decided.add) & members.keys()
    assert set(decided.drain) <= {a for a, leaving in members.items() if not leaving}
    assert set(decided.rejoin) <= {a for a, leaving in members.items() if leaving}
    after = dict(members) | {a: False for a in decided.add + decided.rejoin} | {a: True for a in decided.drain}
    assert {a for a, leaving in after.items() if not leaving} == answered
    assert {a for a, leaving in after.items() if leaving} == members.keys() - answered
    assert plan(after, answered) == Plan()  # the same answer again changes nothing
