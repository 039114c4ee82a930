"""Where a new container goes (policy.placement): the host with the fewest containers, its first free port and GPU."""
from __future__ import annotations

import pytest

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
