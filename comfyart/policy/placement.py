"""Where a new container goes: a host whose containers can run the tasks that wait blocked (no backend that takes
work could run them), then one whose containers were never seen (starting one there is how the pool learns what
they have), then the rest; among equals, the host with the fewest containers that has a free port (and GPU).

A host's inventory is the one its containers last reported, remembered after they stopped (``Pool``), so a host
whose containers were scaled away is still known to have a model."""
from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from comfyart.policy.inventory import Inventory
from comfyart.policy.needs import Needs

Blocked = Mapping[Needs, int]  # the needs of the tasks that wait blocked, with how many tasks have each
NOTHING_BLOCKED: Blocked = {}


class Fit(enum.IntEnum):
    """Whether a container (or any container of a host) could run a task, by its tags and inventory. VRAM is not
    judged: a host's is unknown until a container there reports it."""

    COVERS = 0
    UNKNOWN = 1  # no inventory known yet
    LACKS = 2


def fit(needs: Needs, tags: frozenset[str], inventory: Inventory | None) -> Fit:
    if needs.tags - tags:
        return Fit.LACKS
    if not needs.of_inventory:
        return Fit.COVERS
    if inventory is None:
        return Fit.UNKNOWN
    return Fit.COVERS if inventory.covers(needs) else Fit.LACKS


@dataclass(frozen=True)
class HostView:
    name: str
    ports: tuple[int, int]
    gpus: tuple[int, ...]
    used_ports: frozenset[int]
    used_gpus: frozenset[int]
    containers: int
    available: bool = True
    tags: frozenset[str] = frozenset()
    inventory: Inventory | None = None  # what its containers last reported; None: never seen


@dataclass(frozen=True)
class Placement:
    host: str
    port: int
    gpu: int | None


def host_rank(host: HostView, blocked: Blocked) -> tuple[int, int]:
    """How well a new container on ``host`` would serve the blocked tasks, lower first: (0, -tasks) when its known
    inventory covers some of them, (1, -tasks) when it covers none but is unknown for some, (2, 0) when it is known
    to lack all of them. Every host ranks (0, 0) when nothing is blocked."""
    if not blocked:
        return 0, 0
    verdicts = [(fit(needs, host.tags, host.inventory), count) for needs, count in blocked.items()]
    covered = sum(count for verdict, count in verdicts if verdict is Fit.COVERS)
    if covered:
        return 0, -covered
    unknown = sum(count for verdict, count in verdicts if verdict is Fit.UNKNOWN)
    return (1, -unknown) if unknown else (2, 0)


def free_slot(host: HostView) -> tuple[int, int | None] | None:
    """A free port on ``host`` and, where it lists GPUs, a free GPU; None when it has no room (or is down)."""
    if not host.available:
        return None
    port = next((p for p in range(host.ports[0], host.ports[1] + 1) if p not in host.used_ports), None)
    if port is None:
        return None
    if not host.gpus:
        return port, None
    gpu = next((g for g in host.gpus if g not in host.used_gpus), None)
    return None if gpu is None else (port, gpu)


def place_container(hosts: Sequence[HostView], blocked: Blocked = NOTHING_BLOCKED) -> Placement | None:
    """The host that best serves the ``blocked`` tasks (``host_rank``), then with the fewest containers, that still
    has a free port (and a free GPU where GPUs are listed); ties go to the host listed first. Returns None when
    every host is full."""
    best: tuple[tuple[int, int, int, int], Placement] | None = None
    for order, host in enumerate(hosts):
        slot = free_slot(host)
        if slot is None:
            continue
        key = (*host_rank(host, blocked), host.containers, order)
        if best is None or key < best[0]:
            best = (key, Placement(host.name, *slot))
    return best[1] if best else None


@dataclass(frozen=True)
class Runner:
    """A backend of the pool as far as blocked tasks go: its tags and inventory (for one that has not listed its
    own yet, its host's, or None)."""

    tags: frozenset[str]
    inventory: Inventory | None


def serves_any(runner: Runner, blocked: Blocked) -> bool:
    """Whether ``runner`` could run some of the blocked tasks (or might: its inventory is unknown)."""
    return any(fit(needs, runner.tags, runner.inventory) is not Fit.LACKS for needs in blocked)


def unserved(blocked: Blocked, runners: Sequence[Runner], hosts: Sequence[HostView]) -> int:
    """How many blocked tasks a new container would be for: those that no backend of the pool (starting ones
    included) could run, and that a new container on a host with room could (its inventory covers them, or is
    unknown). Tasks that no host could run ask for nothing: starting containers would not help them."""
    roomy = [host for host in hosts if free_slot(host) is not None]
    total = 0
    for needs, count in blocked.items():
        if any(fit(needs, r.tags, r.inventory) is not Fit.LACKS for r in runners):
            continue
        if any(fit(needs, host.tags, host.inventory) is not Fit.LACKS for host in roomy):
            total += count
    return total
