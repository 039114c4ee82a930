"""Pure decisions of the elastic pool: how many containers the load wants, which to start, drain or stop, when
a container is recycled, and how a health check moves a backend between healthy and unhealthy. No I/O, no clock:
the pool observes, these functions decide, the pool acts.
"""
from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

from comfyart.policy.placement import HostView


class ContainerState(enum.StrEnum):
    STARTING = "starting"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


@dataclass(frozen=True)
class ContainerView:
    id: str
    state: ContainerState
    draining: bool = False
    busy: int = 0  # prompts in flight on it
    idle_s: float = 0.0  # since its last prompt ended, or since it came up; 0 while busy
    serves_blocked: bool = True  # could run (or might) some of the tasks that wait blocked, if any wait


@dataclass(frozen=True)
class ScaleLimits:
    min_containers: int
    max_containers: int
    tasks_per_container: float
    scale_up_cooldown_s: float
    scale_down_cooldown_s: float
    idle_timeout_s: float
    target: int | None = None  # a fixed count set at run time, instead of following the queue


@dataclass(frozen=True)
class ScaleInput:
    queued: int  # tasks waiting in the queue
    running: int  # prompts in flight on any backend, static ones included
    containers: tuple[ContainerView, ...] = ()
    free_slots: int = 0  # containers the hosts still have room for (ports, GPUs)
    static_capacity: int = 0  # healthy static backends taking work: they carry part of the load
    since_scale_up_s: float | None = None  # None: never
    since_scale_down_s: float | None = None
    replacements: int = 0  # containers recycled or lost that are owed a successor regardless of cooldown
    blocked: int = 0  # blocked tasks no container could run but a new one could (``placement.unserved``)


IDLE_DRAIN = "idle: the load went down"
SWAP_DRAIN = "idle, and cannot run the tasks that wait blocked: makes room for a container that can"


@dataclass(frozen=True)
class ScaleDecision:
    desired: int
    start: int = 0
    undrain: tuple[str, ...] = ()  # draining containers put back to work instead of starting new ones
    drain: tuple[str, ...] = ()
    reason: str = ""
    limited_by: tuple[str, ...] = ()  # what held the pool back: "capacity", "cooldown", "busy"
    drain_reason: str = IDLE_DRAIN

    @property
    def acts(self) -> bool:
        return bool(self.start or self.undrain or self.drain)


def free_container_slots(hosts: Sequence[HostView]) -> int:
    """How many more containers the reachable hosts can take: free ports, and free GPUs where GPUs are listed."""
    total = 0
    for host in hosts:
        if not host.available:
            continue
        ports = host.ports[1] - host.ports[0] + 1 - len(host.used_ports)
        room = ports if not host.gpus else min(ports, len(set(host.gpus) - host.used_gpus))
        total += max(0, room)
    return total


def wanted_containers(load: int, limits: ScaleLimits, static_capacity: int) -> int:
    """Containers the load asks for before min/max: one per ``tasks_per_container`` tasks (queued or running),
    less what the static backends carry."""
    if limits.target is not None:
        return limits.target
    return max(0, math.ceil(load / limits.tasks_per_container) - static_capacity)


def wanted_backends(load: int, limits: ScaleLimits) -> int:
    """Backends the load wants when comfyart runs none of them (no Docker or process provider: Kubernetes, or
    whoever runs them, scales to this count, read from the ``comfyart_autoscaler_wanted_backends`` gauge): one per
    ``tasks_per_container`` tasks, queued or running, within min/max (or the ``target`` set at run time). No static
    capacity is taken off: those backends are the ones being scaled, and counting them would scale them away."""
    wanted = limits.target if limits.target is not None else math.ceil(load / limits.tasks_per_container)
    return max(limits.min_containers, min(limits.max_containers, wanted))


def decide_elsewhere(queued: int, running: int, up: int, limits: ScaleLimits) -> ScaleDecision:
    """The decision of a pool whose backends someone else scales (``wanted_backends``): a count and why, no
    action. ``up``: backends taking work now, for the reason's words."""
    load = queued + running
    desired = wanted_backends(load, limits)
    basis = (f"target {limits.target}" if limits.target is not None else
             f"load {load} (queued {queued}, running {running}) at {limits.tasks_per_container:g} per backend "
             f"wants {math.ceil(load / limits.tasks_per_container)}")
    return ScaleDecision(desired, reason=f"{basis}, bounded to {desired} by min {limits.min_containers}/max "
                                         f"{limits.max_containers}; {up} up; no provider here: whoever runs the "
                                         "backends scales them (comfyart_autoscaler_wanted_backends)")


def decide_scale(observed: ScaleInput, limits: ScaleLimits) -> ScaleDecision:
    """The desired container count and the actions that move toward it.

    Scaling up covers the whole shortfall in one step (bounded by the hosts' free slots), first by taking back
    draining containers. Below ``min_containers``, and for owed replacements, the cooldown does not apply.
    Scaling down drains only containers idle for ``idle_timeout_s``, longest idle first, never below the minimum;
    the pool stops a drained container once it holds no prompt.

    Tasks that wait blocked, which no container could run but a new one could (``observed.blocked``), want one
    more container than are up (whatever the cooldown; placement puts it where they can run), within
    ``max_containers`` (a ``target``, when set). At that bound, an idle container that cannot run them is drained
    to make room for one that can; a busy one never is.
    """
    load = observed.queued + observed.running
    wanted = wanted_containers(load, limits, observed.static_capacity)
    desired = max(limits.min_containers, min(limits.max_containers, wanted))
    count = sum(1 for c in observed.containers if not c.draining)
    basis = (f"target {limits.target}" if limits.target is not None else
             f"load {load} (queued {observed.queued}, running {observed.running}) at "
             f"{limits.tasks_per_container:g} per container" +
             (f", {observed.static_capacity} static" if observed.static_capacity else ""))
    basis += f" wants {wanted}, bounded to {desired} by min {limits.min_containers}/max {limits.max_containers}"
    if observed.blocked:
        basis += f"; {observed.blocked} blocked task(s) no container can run want one more"
        ceiling = desired if limits.target is not None else limits.max_containers
        if count < ceiling:
            desired = max(desired, count + 1)
        elif desired <= count:
            swap = _swap(observed, basis, desired, count)
            if swap is not None:
                return swap
    if desired > count:
        return _scale_up(observed, limits, basis, desired, count)
    if desired < count:
        return _scale_down(observed, limits, basis, desired, count)
    return ScaleDecision(desired, reason=f"{basis}; {count} up: steady")


def _scale_up(observed: ScaleInput, limits: ScaleLimits, basis: str, desired: int, count: int) -> ScaleDecision:
    shortfall = desired - count
    owed = max(limits.min_containers - count, min(observed.replacements, shortfall), 1 if observed.blocked else 0)
    limited: tuple[str, ...] = ()
    if observed.since_scale_up_s is not None and observed.since_scale_up_s < limits.scale_up_cooldown_s \
            and shortfall > owed:
        shortfall = owed
        limited += ("cooldown",)
    # busy draining containers first: they hold work and stay warm; for blocked tasks, only those that can run them
    draining = [c for c in observed.containers if c.draining and (c.serves_blocked or not observed.blocked)]
    undrain = tuple(c.id for c in sorted(draining, key=lambda c: (-c.busy, c.id))[:shortfall])
    start = min(shortfall - len(undrain), observed.free_slots)
    if start < shortfall - len(undrain):
        limited += ("capacity",)
    reason = f"{basis}; {count} up: start {start}" + (f", keep {len(undrain)} draining" if undrain else "")
    if limited:
        reason += f" (held back by {' and '.join(limited)})"
    return ScaleDecision(desired, start, undrain, (), reason, limited)


def _scale_down(observed: ScaleInput, limits: ScaleLimits, basis: str, desired: int, count: int) -> ScaleDecision:
    if observed.since_scale_down_s is not None and observed.since_scale_down_s < limits.scale_down_cooldown_s:
        return ScaleDecision(desired, reason=f"{basis}; {count} up: scale-down cooling down",
                             limited_by=("cooldown",))
    idle = [c for c in observed.containers if not c.draining and c.state != ContainerState.STARTING
            and c.busy == 0 and c.idle_s >= limits.idle_timeout_s]
    idle.sort(key=lambda c: (-c.idle_s, c.id))
    drain = tuple(c.id for c in idle[:count - desired])
    if not drain:
        return ScaleDecision(desired, reason=f"{basis}; {count} up: none idle for "
                                             f"{limits.idle_timeout_s:g} s yet", limited_by=("busy",))
    return ScaleDecision(desired, drain=drain, reason=f"{basis}; {count} up: drain {len(drain)} idle")


def _swap(observed: ScaleInput, basis: str, desired: int, count: int) -> ScaleDecision | None:
    """At the bound, with blocked tasks: an idle container that cannot run them gives way to one that can (a
    draining one that can is taken back, else one is started). None when no container is idle or none has room."""
    idle = sorted((c for c in observed.containers if not c.draining and not c.serves_blocked and c.busy == 0
                   and c.state != ContainerState.STARTING), key=lambda c: (-c.idle_s, c.id))
    able = sorted((c for c in observed.containers if c.draining and c.serves_blocked), key=lambda c: (-c.busy, c.id))
    if not idle or not (able or observed.free_slots):
        return None
    undrain = (able[0].id,) if able else ()
    reason = (f"{basis}; {count} up, at the bound: drain idle {idle[0].id} for "
              + (f"draining {undrain[0]}, kept" if undrain else "a new one"))
    return ScaleDecision(desired, 0 if undrain else 1, undrain, (idle[0].id,), reason, drain_reason=SWAP_DRAIN)
