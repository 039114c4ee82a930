"""Pure decisions: where a container goes, which backend takes a prompt, how many containers to start,
what to do after an uncertain submission, how far along a prompt is. No I/O, no clock, no randomness.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import FrozenSet, Optional, Sequence, Tuple


@dataclass(frozen=True)
class HostView:
    name: str
    ports: Tuple[int, int]
    gpus: Tuple[int, ...]
    used_ports: FrozenSet[int]
    used_gpus: FrozenSet[int]
    containers: int
    available: bool = True


@dataclass(frozen=True)
class Placement:
    host: str
    port: int
    gpu: Optional[int]


def place_container(hosts: Sequence[HostView]) -> Optional[Placement]:
    """The host with the fewest containers that still has a free port (and a free GPU where GPUs are listed);
    ties go to the host listed first. Returns None when every host is full."""
    best: Optional[Tuple[int, int, Placement]] = None
    for order, host in enumerate(hosts):
        if not host.available:
            continue
        port = next((p for p in range(host.ports[0], host.ports[1] + 1) if p not in host.used_ports), None)
        if port is None:
            continue
        gpu: Optional[int] = None
        if host.gpus:
            gpu = next((g for g in host.gpus if g not in host.used_gpus), None)
            if gpu is None:
                continue
        key = (host.containers, order)
        if best is None or key < best[:2]:
            best = (host.containers, order, Placement(host.name, port, gpu))
    return best[2] if best else None


@dataclass(frozen=True)
class BackendLoad:
    id: str
    healthy: bool
    inflight: int
    vram_free: Optional[int] = None
    accepting: bool = True


def choose_backend(backends: Sequence[BackendLoad], max_inflight: int) -> Optional[str]:
    """Least loaded healthy backend with a free slot: fewest in-flight prompts, then most free VRAM,
    then the order given. None when every backend is full or sick."""
    candidates = [b for b in backends if b.healthy and b.accepting and b.inflight < max_inflight]
    if not candidates:
        return None
    order = {b.id: i for i, b in enumerate(backends)}
    return min(candidates, key=lambda b: (b.inflight, -(b.vram_free or 0), order[b.id])).id


def containers_to_start(*, active: int, min_containers: int, max_containers: int, free_slots: int) -> int:
    """How many containers to start now to keep ``min_containers`` up: ``active`` counts the ones starting
    or running; never more than ``max_containers`` in all, nor more than the hosts have room for."""
    wanted = min(min_containers, max_containers) - active
    return max(0, min(wanted, free_slots))


class AfterUncertainSubmit(enum.Enum):
    TRACK = "track"  # the backend has the prompt: follow it, never submit again
    RESUBMIT = "resubmit"  # the backend never saw it: safe to queue the task again


def after_uncertain_submit(*, in_history: bool, in_queue: bool) -> AfterUncertainSubmit:
    """After a submission whose answer was lost, /history and /queue decide: a prompt found in either
    was accepted, and submitting it again would run it twice."""
    if in_history or in_queue:
        return AfterUncertainSubmit.TRACK
    return AfterUncertainSubmit.RESUBMIT


def should_fail_after_attempts(attempts: int, max_attempts: int) -> bool:
    """A task whose submissions kept getting lost fails once it has used ``max_attempts``."""
    return attempts >= max_attempts


def prompt_progress(*, total_nodes: int, cached_nodes: int, finished_nodes: int, step: Optional[float],
                    step_max: Optional[float]) -> float:
    """Fraction of a prompt done, from 0.0 to 1.0: cached nodes count as done, the running node counts by its
    own step progress."""
    if total_nodes <= 0:
        return 0.0
    running_fraction = 0.0
    if step is not None and step_max:
        running_fraction = max(0.0, min(1.0, step / step_max))
    done = min(total_nodes, cached_nodes + finished_nodes) + running_fraction
    return round(max(0.0, min(1.0, done / total_nodes)), 4)
