"""Where a new container goes: the host with the fewest containers that has a free port (and GPU)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class HostView:
    name: str
    ports: tuple[int, int]
    gpus: tuple[int, ...]
    used_ports: frozenset[int]
    used_gpus: frozenset[int]
    containers: int
    available: bool = True


@dataclass(frozen=True)
class Placement:
    host: str
    port: int
    gpu: int | None


def place_container(hosts: Sequence[HostView]) -> Placement | None:
    """The host with the fewest containers that still has a free port (and a free GPU where GPUs are listed);
    ties go to the host listed first. Returns None when every host is full."""
    best: tuple[int, int, Placement] | None = None
    for order, host in enumerate(hosts):
        if not host.available:
            continue
        port = next((p for p in range(host.ports[0], host.ports[1] + 1) if p not in host.used_ports), None)
        if port is None:
            continue
        gpu: int | None = None
        if host.gpus:
            gpu = next((g for g in host.gpus if g not in host.used_gpus), None)
            if gpu is None:
                continue
        key = (host.containers, order)
        if best is None or key < best[:2]:
            best = (host.containers, order, Placement(host.name, port, gpu))
    return best[2] if best else None
