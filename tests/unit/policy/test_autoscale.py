"""The autoscaler (policy.autoscale): decide_scale by table and by invariants over thousands of small pools, the
containers it wants and the slots it has room for, and the backends it wants of whoever else runs them (no
provider: Kubernetes scales to the count)."""
from __future__ import annotations

import dataclasses
import itertools

import pytest

from comfyart.policy.autoscale import (
    IDLE_DRAIN,
    SWAP_DRAIN,
    ContainerState,
    ContainerView,
    ScaleInput,
    ScaleLimits,
    decide_elsewhere,
    decide_scale,
    free_container_slots,
    wanted_backends,
    wanted_containers,
)
from comfyart.policy.placement import HostView

H, S, U = ContainerState.HEALTHY, ContainerState.STARTING, ContainerState.UNHEALTHY


def limits(min=1, max=4, per=2.0, up=10.0, down=60.0, idle=300.0, target=None):
    return ScaleLimits(min, max, per, up, down, idle, target)


def c(id, state=H, draining=False, busy=0, idle=0.0):
    return ContainerView(id, state, draining, busy, idle)


def idle_pool(n, idle=1000.0):
    return tuple(c(f"c{i}", idle=idle) for i in range(n))


# ------------------------------------------------------------------------------------------ scale up
@pytest.mark.parametrize("observed, lim, start, undrain, desired", [
    pytest.param(ScaleInput(0, 0, (), 10), limits(min=1), 1, (), 1, id="empty pool gets its minimum"),
    pytest.param(ScaleInput(0, 0, (), 10), limits(min=0), 0, (), 0, id="min 0 and no load: nothing"),
    pytest.param(ScaleInput(50, 0, idle_pool(1), 10), limits(max=4), 3, (), 4,
                 id="a burst goes to max in one step"),
    pytest.param(ScaleInput(5, 0, idle_pool(1), 10), limits(max=8, per=2), 2, (), 3,
                 id="as many as the backlog needs: ceil(5/2)=3"),
    pytest.param(ScaleInput(4, 2, idle_pool(1), 10), limits(max=8, per=2), 2, (), 3,
                 id="running tasks count as load"),
    pytest.param(ScaleInput(50, 0, idle_pool(1), 2), limits(max=8), 2, (), 8, id="bounded by the hosts' room"),
    pytest.param(ScaleInput(50, 0, idle_pool(1), 0), limits(max=8), 0, (), 8, id="no room at all"),
    pytest.param(ScaleInput(50, 0, (c("a"), c("b", draining=True, busy=1)), 10), limits(max=3), 1, ("b",), 3,
                 id="a draining container is taken back before starting one"),
    pytest.param(ScaleInput(50, 0, (c("a"), c("b", S)), 10), limits(max=4), 2, (), 4,
                 id="starting containers count as up"),
    pytest.param(ScaleInput(50, 0, (c("a"), c("b", U)), 10), limits(max=4), 2, (), 4,
                 id="unhealthy containers count as up (they get replaced separately)"),
    pytest.param(ScaleInput(0, 0, idle_pool(1), 10), limits(min=3), 2, (), 3, id="back up to a raised minimum"),
    pytest.param(ScaleInput(0, 0, (), 10), limits(min=5, max=5), 5, (), 5, id="min == max"),
    pytest.param(ScaleInput(0, 0, idle_pool(1), 10), limits(min=0, target=3), 2, (), 3, id="a fixed target"),
    pytest.param(ScaleInput(50, 0, idle_pool(1), 10), limits(min=0, max=4, target=1), 0, (), 1,
                 id="a target ignores the load"),
    pytest.param(ScaleInput(6, 0, (), 10, static_capacity=2), limits(min=0, per=2), 1, (), 1,
                 id="static backends carry part of the load"),
    pytest.param(ScaleInput(2, 0, (), 10, static_capacity=5), limits(min=0), 0, (), 0,
                 id="static backends carry all of it"),
])
def test_scale_up(observed, lim, start, undrain, desired):
    decision = decide_scale(observed, lim)
    assert (decision.start, decision.undrain, decision.desired, decision.drain) == (start, undrain, desired, ())


def test_scale_up_waits_for_its_cooldown_but_not_below_the_minimum():
    cooling = ScaleInput(50, 0, idle_pool(2), 10, since_scale_up_s=3.0)
    decision = decide_scale(cooling, limits(min=1, max=6, up=10))
    assert decision.start == 0 and "cooldown" in decision.limited_by and "cooldown" in decision.reason
    below_min = ScaleInput(50, 0, idle_pool(1), 10, since_scale_up_s=3.0)
    assert decide_scale(below_min, limits(min=3, max=6, up=10)).start == 2
    cooled = ScaleInput(50, 0, idle_pool(2), 10, since_scale_up_s=10.0)
    assert decide_scale(cooled, limits(min=1, max=6, up=10)).start == 4


def test_replacements_are_owed_regardless_of_cooldown_but_only_up_to_the_shortfall():
    owed = ScaleInput(50, 0, idle_pool(2), 10, since_scale_up_s=1.0, replacements=1)
    assert decide_scale(owed, limits(max=6)).start == 1
    more_owed_than_wanted = ScaleInput(0, 0, idle_pool(1), 10, since_scale_up_s=1.0, replacements=3)
    assert decide_scale(more_owed_than_wanted, limits(min=1, max=6)).start == 0


def test_capacity_shows_in_the_reason():
    decision = decide_scale(ScaleInput(50, 0, idle_pool(1), 1), limits(max=8))
    assert decision.limited_by == ("capacity",) and "capacity" in decision.reason


# ------------------------------------------------------------------------------------------ scale down
@pytest.mark.parametrize("containers, lim, drain", [
    pytest.param(idle_pool(4), limits(min=1), ("c0", "c1", "c2"), id="no load: back to the minimum"),
    pytest.param(idle_pool(4), limits(min=0), ("c0", "c1", "c2", "c3"), id="to zero when min is 0"),
    pytest.param(idle_pool(4, idle=299.0), limits(min=1), (), id="none idle long enough"),
    pytest.param((c("a", idle=500), c("b", idle=900), c("c", idle=100)), limits(min=1), ("b", "a"),
                 id="longest idle first, only those past idle_timeout"),
    pytest.param((c("a", busy=1), c("b", idle=900)), limits(min=0), ("b",), id="never a busy one"),
    pytest.param((c("a", S, idle=900), c("b", idle=900)), limits(min=0), ("b",), id="never a starting one"),
    pytest.param((c("a", U, idle=900), c("b", idle=900)), limits(min=0), ("a", "b"),
                 id="an idle unhealthy one may go"),
    pytest.param((c("a", idle=900), c("b", draining=True, idle=900)), limits(min=0), ("a",),
                 id="one already draining is not drained again"),
])
def test_scale_down(containers, lim, drain):
    decision = decide_scale(ScaleInput(0, 0, containers, 10), lim)
    assert decision.drain == drain and decision.start == 0 and decision.undrain == ()


def test_scale_down_keeps_what_the_load_still_needs():
    decision = decide_scale(ScaleInput(3, 0, idle_pool(4), 10), limits(min=1, per=2))
    assert decision.desired == 2 and len(decision.drain) == 2


def test_scale_down_waits_for_its_cooldown():
    decision = decide_scale(ScaleInput(0, 0, idle_pool(4), 10, since_scale_down_s=5), limits(down=60))
    assert decision.drain == () and decision.limited_by == ("cooldown",)
    assert decide_scale(ScaleInput(0, 0, idle_pool(4), 10, since_scale_down_s=60), limits(down=60)).drain


def test_steady_state_does_nothing():
    decision = decide_scale(ScaleInput(4, 0, idle_pool(2), 10), limits(per=2))
    assert not decision.acts and "steady" in decision.reason


# ------------------------------------------------------------------------------------------ blocked tasks
def unfit(id, state=H, busy=0, idle=0.0, draining=False):
    return ContainerView(id, state, draining, busy, idle, serves_blocked=False)


@pytest.mark.parametrize("observed, lim, start, undrain, drain, desired", [
    pytest.param(ScaleInput(1, 0, (unfit("a"),), 5, blocked=1), limits(min=1, max=4), 1, (), (), 2,
                 id="min met by a container that cannot run them: one more starts"),
    pytest.param(ScaleInput(1, 0, (unfit("a"),), 5), limits(min=1, max=4), 0, (), (), 1,
                 id="before: the load alone wants none more"),
    pytest.param(ScaleInput(30, 0, (unfit("a"),), 5, blocked=30), limits(min=1, max=4, per=10), 2, (), (), 3,
                 id="one more than are up, or what the load wants if more"),
    pytest.param(ScaleInput(1, 0, (unfit("a"),), 5, blocked=1, since_scale_up_s=1.0), limits(min=1, max=4), 1,
                 (), (), 2, id="whatever the cooldown"),
    pytest.param(ScaleInput(1, 0, (unfit("a", idle=5.0),), 5, blocked=1), limits(min=1, max=1), 1, (), ("a",), 1,
                 id="at max: an idle container that cannot run them gives way"),
    pytest.param(ScaleInput(1, 1, (unfit("a", busy=1),), 5, blocked=1), limits(min=1, max=1), 0, (), (), 1,
                 id="at max: never a busy one"),
    pytest.param(ScaleInput(1, 0, (unfit("a", S),), 5, blocked=1), limits(min=1, max=1), 0, (), (), 1,
                 id="at max: never a starting one"),
    pytest.param(ScaleInput(1, 0, (c("a"),), 5, blocked=1), limits(min=1, max=1), 0, (), (), 1,
                 id="at max: never one that can run them"),
    pytest.param(ScaleInput(1, 0, (unfit("a"),), 0, blocked=1), limits(min=1, max=1), 0, (), (), 1,
                 id="at max: no swap without room for the new one"),
    pytest.param(ScaleInput(1, 0, (unfit("a"), c("b", draining=True)), 0, blocked=1), limits(min=1, max=1), 0,
                 ("b",), ("a",), 1, id="at max: a draining one that can run them is taken back instead"),
    pytest.param(ScaleInput(1, 0, (unfit("a"), unfit("b", draining=True)), 5, blocked=1), limits(min=1, max=4), 1,
                 (), (), 2, id="a draining one that cannot run them is not taken back for them"),
    pytest.param(ScaleInput(1, 0, (unfit("a"), c("b", draining=True)), 5, blocked=1), limits(min=1, max=4), 0,
                 ("b",), (), 2, id="a draining one that can is"),
    pytest.param(ScaleInput(1, 0, (unfit("a"),), 5, blocked=1), limits(min=0, max=4, target=1), 1, (), ("a",), 1,
                 id="a target is kept: the idle one gives way"),
    pytest.param(ScaleInput(0, 0, (), 5, blocked=2), limits(min=0, max=4, per=10), 1, (), (), 1,
                 id="an empty pool"),
    pytest.param(ScaleInput(0, 0, (), 5, blocked=2), limits(min=0, max=0), 0, (), (), 0, id="max 0"),
])
def test_blocked_tasks(observed, lim, start, undrain, drain, desired):
    decision = decide_scale(observed, lim)
    assert (decision.start, decision.undrain, decision.drain, decision.desired) == (start, undrain, drain, desired)
    if observed.blocked:
        assert "blocked" in decision.reason


def test_a_swap_says_why_it_drains():
    decision = decide_scale(ScaleInput(1, 0, (unfit("a"),), 5, blocked=1), limits(min=1, max=1))
    assert decision.drain_reason == SWAP_DRAIN and "drain idle a" in decision.reason
    assert decide_scale(ScaleInput(0, 0, idle_pool(2), 5), limits(min=0)).drain_reason == IDLE_DRAIN


# ------------------------------------------------------------------------------------------ invariants
STATES = (H, S, U)


def _small_pools():
    shapes = itertools.product(STATES, (False, True), (0, 1), (0.0, 400.0))
    views = [ContainerView(f"x{i}", *shape) for i, shape in enumerate(shapes)]
    for size in range(0, 5):
        for combo in itertools.combinations(range(len(views)), size):
            if size > 2 and combo[0] % 3:
                continue  # keep the space a few thousand cases
            yield tuple(views[i] for i in combo)


@pytest.mark.parametrize("minimum, maximum", [(0, 3), (1, 4), (2, 2)])
def test_invariants_over_many_pools(minimum, maximum):
    lim = limits(min=minimum, max=maximum, per=2, idle=300)
    checked = 0
    for containers in _small_pools():
        for queued, room, since_up, since_down in itertools.product((0, 3, 20), (0, 1, 5), (None, 1.0),
                                                                    (None, 1.0)):
            observed = ScaleInput(queued, sum(x.busy for x in containers), containers, room,
                                  since_scale_up_s=since_up, since_scale_down_s=since_down)
            d = decide_scale(observed, lim)
            live = [x for x in containers if not x.draining]
            by_id = {x.id: x for x in containers}
            assert d.start <= room
            assert not (d.drain and (d.start or d.undrain)), "never up and down at once"
            assert set(d.undrain) <= {x.id for x in containers if x.draining}
            assert len(live) + d.start + len(d.undrain) <= max(maximum, len(live))
            assert len(live) - len(d.drain) >= min(minimum, len(live)), "never below the minimum"
            for drained_id in d.drain:
                victim = by_id[drained_id]
                assert not victim.draining and victim.busy == 0 and victim.state != S and victim.idle_s >= 300
            if since_up is not None and len(live) >= minimum:
                assert d.start == 0 and d.undrain == (), "cooldown holds scale-up above the minimum"
            if since_down is not None:
                assert d.drain == ()
            if since_up is None and d.desired > len(live):
                reachable = len(live) + len([x for x in containers if x.draining]) + room
                assert len(live) + d.start + len(d.undrain) == min(d.desired, reachable), "one step, not one by one"
            checked += 1
    assert checked > 1000


@pytest.mark.parametrize("minimum, maximum", [(0, 3), (1, 4), (2, 2), (1, 1)])
def test_invariants_with_blocked_tasks_over_many_pools(minimum, maximum):
    """Half the containers can run the blocked tasks: at most one idle one that cannot gives way, never a busy or
    starting one; the pool never goes past max or below min; something is done for them whenever it can be."""
    lim = limits(min=minimum, max=maximum, per=2, idle=300)
    checked = 0
    for pool in _small_pools():
        containers = tuple(dataclasses.replace(x, serves_blocked=int(x.id[1:]) % 2 == 0) for x in pool)
        for queued, room, since_up in itertools.product((0, 20), (0, 1), (None, 1.0)):
            observed = ScaleInput(queued, sum(x.busy for x in containers), containers, room,
                                  since_scale_up_s=since_up, blocked=2)
            d = decide_scale(observed, lim)
            live = [x for x in containers if not x.draining]
            by_id = {x.id: x for x in containers}
            after = len(live) - len(d.drain) + d.start + len(d.undrain)
            assert d.start <= room and set(d.undrain) <= {x.id for x in containers if x.draining}
            assert after <= max(maximum, len(live)) and after >= min(minimum, len(live))
            if d.drain and (d.start or d.undrain):  # a swap
                [victim] = [by_id[i] for i in d.drain]
                assert not victim.serves_blocked and victim.busy == 0 and victim.state != S
                assert d.start + len(d.undrain) == 1 and all(by_id[i].serves_blocked for i in d.undrain)
            for drained_id in d.drain:
                assert not by_id[drained_id].draining and by_id[drained_id].busy == 0
            able_draining = any(x.draining and x.serves_blocked for x in containers)
            swappable = any(not x.draining and not x.serves_blocked and x.busy == 0 and x.state != S for x in live)
            if (room or able_draining) and (len(live) < maximum or swappable):
                assert d.start or any(by_id[i].serves_blocked for i in d.undrain), "blocked tasks get a container"
            checked += 1
    assert checked > 500


# ------------------------------------------------------------------------------------------ helpers
@pytest.mark.parametrize("load, per, static, target, expected", [
    (0, 2, 0, None, 0), (1, 2, 0, None, 1), (2, 2, 0, None, 1), (3, 2, 0, None, 2), (3, 0.5, 0, None, 6),
    (4, 1, 1, None, 3), (1, 1, 3, None, 0), (9, 1, 0, 2, 2),
])
def test_wanted_containers(load, per, static, target, expected):
    assert wanted_containers(load, limits(per=per, target=target), static) == expected


def host(ports=(100, 104), gpus=(), used_ports=(), used_gpus=(), available=True):
    return HostView("h", ports, tuple(gpus), frozenset(used_ports), frozenset(used_gpus), len(used_ports),
                    available)


@pytest.mark.parametrize("hosts, expected", [
    ([host()], 5), ([host(used_ports=[100, 101])], 3), ([host(gpus=[0, 1])], 2),
    ([host(gpus=[0, 1], used_ports=[100], used_gpus=[0])], 1), ([host(gpus=[0], used_ports=[100, 101, 102, 103, 104],
                                                                      used_gpus=[])], 0),
    ([host(), host(gpus=[3])], 6), ([host(available=False), host()], 5), ([], 0),
    ([host(gpus=[0], used_gpus=[0, 7])], 0),
])
def test_free_slots(hosts, expected):
    assert free_container_slots(hosts) == expected


# ------------------------------------------------------------------------------------------ no provider
@pytest.mark.parametrize("load, lo, hi, per, target, expected", [
    (0, 0, 4, 2, None, 0), (0, 1, 4, 2, None, 1), (1, 0, 4, 2, None, 1), (4, 0, 4, 2, None, 2),
    (5, 0, 4, 2, None, 3), (100, 0, 4, 2, None, 4), (3, 0, 10, 0.5, None, 6), (0, 0, 4, 2, 3, 3),
    (50, 0, 4, 2, 0, 0),
])
def test_wanted_backends(load, lo, hi, per, target, expected):
    assert wanted_backends(load, limits(min=lo, max=hi, per=per, target=target)) == expected


def test_wanted_backends_over_many_loads_is_the_bounded_ceiling_and_never_counts_the_backends_up():
    for load, lo, hi, per in itertools.product(range(30), range(3), range(3, 6), (0.5, 1.0, 2.0, 3.0)):
        wanted = wanted_backends(load, limits(min=lo, max=hi, per=per))
        assert lo <= wanted <= hi
        assert wanted == min(hi, max(lo, -(-load // per)))
        # the same as decide_scale for a pool of containers, with no static backend taking load off
        assert wanted == decide_scale(ScaleInput(load, 0, (), 100), limits(min=lo, max=hi, per=per)).desired


def test_a_decision_elsewhere_gives_a_count_and_why_and_acts_on_nothing():
    decision = decide_elsewhere(queued=3, running=2, up=1, limits=limits(min=0, max=4, per=2))
    assert decision.desired == 3 and not decision.acts and decision.limited_by == ()
    assert "load 5 (queued 3, running 2) at 2 per backend wants 3, bounded to 3 by min 0/max 4; 1 up" \
        in decision.reason
    idle = decide_elsewhere(queued=0, running=0, up=2, limits=limits(min=0, max=4))
    assert idle.desired == 0 and "wants 0, bounded to 0" in idle.reason
    assert decide_elsewhere(0, 0, 0, limits(min=0, max=4, target=2)).reason.startswith("target 2, bounded to 2")
