"""Where a new container goes (policy.placement): where the blocked tasks can run (by the inventory its host's
containers last reported), then the host with the fewest containers, its first free port and GPU; and how many
blocked tasks a new container would be for."""
from __future__ import annotations

import itertools

import pytest

from comfyart.policy.inventory import UNLISTED, Inventory
from comfyart.policy.needs import Needs
from comfyart.policy.placement import (
    Fit,
    HostView,
    Placement,
    Runner,
    fit,
    host_rank,
    place_container,
    serves_any,
    unserved,
)


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


# ------------------------------------------------------------------------------------------ blocked tasks
LOADER = "CheckpointLoaderSimple"


def inventory(*checkpoints, digest=None):
    return Inventory(digest or ",".join(checkpoints), frozenset({LOADER, "SaveImage"}),
                     {(LOADER, "ckpt_name"): frozenset(checkpoints)})


def needs_ckpt(name, tags=()):
    return Needs(tags=frozenset(tags), nodes=frozenset({LOADER}), values=frozenset({(LOADER, "ckpt_name", name)}))


ONLY_X, X_AND_Y = inventory("x.safetensors"), inventory("x.safetensors", "y.safetensors")
NEEDS_X, NEEDS_Y = needs_ckpt("x.safetensors"), needs_ckpt("y.safetensors")


def seen(name, inv, containers=0, tags=(), **kwargs):
    return HostView(name, (100, 102), (), frozenset(range(100, 100 + containers)), frozenset(), containers,
                    tags=frozenset(tags), inventory=inv, **kwargs)


@pytest.mark.parametrize("needs, tags, inv, expected", [
    pytest.param(NEEDS_Y, (), X_AND_Y, Fit.COVERS, id="its inventory has the model"),
    pytest.param(NEEDS_Y, (), ONLY_X, Fit.LACKS, id="its inventory lacks the model"),
    pytest.param(NEEDS_Y, (), None, Fit.UNKNOWN, id="never seen"),
    pytest.param(needs_ckpt("y.safetensors", ["video"]), (), None, Fit.LACKS, id="a missing tag is known at once"),
    pytest.param(needs_ckpt("y.safetensors", ["video"]), ["video"], X_AND_Y, Fit.COVERS, id="tag and model"),
    pytest.param(Needs(tags=frozenset({"video"})), ["video"], None, Fit.COVERS, id="tags alone need no inventory"),
    pytest.param(Needs(vram=80 << 30), (), None, Fit.COVERS, id="vram is not judged by host"),
    pytest.param(NEEDS_Y, (), UNLISTED, Fit.COVERS, id="a backend that lists nothing takes anything"),
])
def test_fit(needs, tags, inv, expected):
    assert fit(needs, frozenset(tags), inv) is expected


@pytest.mark.parametrize("blocked, inv, expected", [
    pytest.param({}, ONLY_X, (0, 0), id="nothing blocked: every host alike"),
    pytest.param({NEEDS_Y: 3}, X_AND_Y, (0, -3), id="covers"),
    pytest.param({NEEDS_Y: 3}, None, (1, -3), id="unknown"),
    pytest.param({NEEDS_Y: 3}, ONLY_X, (2, 0), id="lacks"),
    pytest.param({NEEDS_Y: 3, needs_ckpt("z.safetensors"): 1}, inventory("z.safetensors"), (0, -1),
                 id="covers some: counted by tasks"),
])
def test_host_rank(blocked, inv, expected):
    assert host_rank(seen("h", inv), blocked) == expected


def test_a_container_for_blocked_tasks_goes_where_the_model_is_even_with_more_containers():
    hosts = [seen("a", ONLY_X, containers=0), seen("b", X_AND_Y, containers=2)]
    assert place_container(hosts, {NEEDS_Y: 1}) == Placement("b", 102, None)
    assert place_container(hosts) == Placement("a", 100, None), "nothing blocked: fewest containers"
    assert place_container(hosts, {NEEDS_X: 1}) == Placement("a", 100, None), "both have it: fewest containers"


def test_the_host_covering_more_blocked_tasks_wins():
    z = needs_ckpt("z.safetensors")
    hosts = [seen("a", inventory("z.safetensors")), seen("b", X_AND_Y)]
    assert place_container(hosts, {NEEDS_Y: 3, z: 1}).host == "b"
    assert place_container(hosts, {NEEDS_Y: 1, z: 3}).host == "a"


KINDS = {"covers": X_AND_Y, "unknown": None, "lacks": ONLY_X}


@pytest.mark.parametrize("count", [1, 2, 3])
def test_placement_order_over_every_small_fleet(count):
    """Every fleet of up to three hosts, each covering, unknown or lacking, with 0-3 containers, up or down: the
    choice is the first host by (covers < unknown < lacks, fewest containers, listed first) among those with room."""
    shapes = itertools.product(KINDS, range(4), (True, False))
    checked = 0
    for fleet in itertools.product(list(shapes), repeat=count):
        hosts = [seen(f"h{i}", KINDS[kind], containers=n, available=up) for i, (kind, n, up) in enumerate(fleet)]
        roomy = [(list(KINDS).index(kind), n, i) for i, (kind, n, up) in enumerate(fleet) if up and n < 3]
        placement = place_container(hosts, {NEEDS_Y: 2})
        if not roomy:
            assert placement is None
        else:
            _, n, i = min(roomy)
            assert placement == Placement(f"h{i}", 100 + n, None)
        checked += 1
    assert checked == 24 ** count


@pytest.mark.parametrize("blocked, runners, hosts, expected", [
    pytest.param({}, [], [seen("b", X_AND_Y)], 0, id="nothing blocked"),
    pytest.param({NEEDS_Y: 2}, [Runner(frozenset(), ONLY_X)], [seen("a", ONLY_X, 1), seen("b", X_AND_Y)], 2,
                 id="only the stopped host has it"),
    pytest.param({NEEDS_Y: 2}, [Runner(frozenset(), ONLY_X)], [seen("a", ONLY_X, 1), seen("b", None)], 2,
                 id="a host never seen might"),
    pytest.param({NEEDS_Y: 2}, [Runner(frozenset(), ONLY_X)], [seen("a", ONLY_X, 1), seen("b", ONLY_X)], 0,
                 id="no host has it: starting one would not help"),
    pytest.param({NEEDS_Y: 2}, [Runner(frozenset(), ONLY_X)], [seen("a", ONLY_X, 1), seen("b", X_AND_Y, 3)], 0,
                 id="the host that has it is full"),
    pytest.param({NEEDS_Y: 2}, [Runner(frozenset(), ONLY_X)],
                 [seen("a", ONLY_X, 1), seen("b", X_AND_Y, available=False)], 0, id="the host that has it is down"),
    pytest.param({NEEDS_Y: 2}, [Runner(frozenset(), X_AND_Y)], [seen("b", X_AND_Y, 1)], 0,
                 id="one starting there (its host's inventory) will run them"),
    pytest.param({NEEDS_Y: 2}, [Runner(frozenset(), None)], [seen("b", None, 1)], 0,
                 id="one starting on a host never seen might"),
    pytest.param({NEEDS_Y: 2, NEEDS_X: 5}, [Runner(frozenset(), ONLY_X)], [seen("a", ONLY_X, 1), seen("b", X_AND_Y)],
                 2, id="only those no backend could run"),
])
def test_unserved(blocked, runners, hosts, expected):
    assert unserved(blocked, runners, hosts) == expected


def test_serves_any():
    assert serves_any(Runner(frozenset(), X_AND_Y), {NEEDS_Y: 1, needs_ckpt("z.safetensors"): 1})
    assert not serves_any(Runner(frozenset(), ONLY_X), {NEEDS_Y: 1})
    assert serves_any(Runner(frozenset(), None), {NEEDS_Y: 1})
    assert not serves_any(Runner(frozenset(), ONLY_X), {})
