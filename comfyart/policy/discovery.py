"""Backends found by DNS, decided: which addresses join, which drain, which come back, from the addresses the
pool holds for a name and what the name resolves to now. ``pool.discovery`` does the lookups and applies the plan.

A backend's id is ``dns:<name>:<address>``: the same address is always the same backend, so a lookup that
repeats itself changes nothing, and a prompt's backend is found again after a failover. A lookup that failed
(timeout, SERVFAIL, no nameserver) is no answer at all: every backend is kept, as a DNS blip must not drain the
fleet. A name that resolves to nothing (NXDOMAIN, no record) is believed only once it has done so for
``empty_grace_s``: a Deployment scaled to zero drains its backends; a moment's empty answer (a Service being
recreated) does not.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

PREFIX = "dns"


def backend_id(name: str, address: str) -> str:
    return f"{PREFIX}:{canonical_name(name)}:{address}"


def canonical_name(name: str) -> str:
    """``Comfyui.GPU.svc.cluster.local.`` and ``comfyui.gpu.svc.cluster.local`` are one name."""
    return name.rstrip(".").lower()


def address_of(name: str, backend_id_: str) -> str | None:
    """The address of a backend found for ``name`` (None: the id is not one of that name's)."""
    prefix = f"{PREFIX}:{canonical_name(name)}:"
    return backend_id_[len(prefix):] if backend_id_.startswith(prefix) else None


def backend_url(scheme: str, address: str, port: int, path: str = "") -> str:
    """``http://10.0.0.7:8188``, ``http://[fd00::7]:8188/comfyui``."""
    host = f"[{address}]" if ipaddress.ip_address(address).version == 6 else address
    return f"{scheme}://{host}:{port}{path.rstrip('/')}"


def addresses(records: Iterable[str]) -> frozenset[str]:
    """The records' addresses, each written one way (``fd00:0::7`` is ``fd00::7``)."""
    return frozenset(str(ipaddress.ip_address(record)) for record in records)


def believed(answer: frozenset[str] | None, *, empty_for_s: float, grace_s: float) -> frozenset[str] | None:
    """What to act on: the answer, or None (keep every backend) for a failed lookup, or for an empty answer that
    has not lasted ``grace_s`` yet (``empty_for_s``: since the first empty answer of this streak)."""
    if answer is None or (not answer and empty_for_s < grace_s):
        return None
    return answer


@dataclass(frozen=True)
class Plan:
    """What to do to a name's backends, each tuple sorted (addresses join the pool in a stable order)."""

    add: tuple[str, ...] = ()  # addresses new to the pool
    drain: tuple[str, ...] = ()  # gone from the answer: no new prompt, forgotten once their prompts are done
    rejoin: tuple[str, ...] = ()  # draining because they had gone, and back in the answer: taking work again

    @property
    def changes(self) -> bool:
        return bool(self.add or self.drain or self.rejoin)


def plan(members: Mapping[str, bool], answer: frozenset[str] | None) -> Plan:
    """``members``: the name's backends in the pool, address -> whether it is leaving (draining because its address
    had gone); ``answer``: the addresses to act on (``believed``), None to keep everything."""
    if answer is None:
        return Plan()
    return Plan(add=tuple(sorted(answer - members.keys())),
                drain=tuple(sorted(a for a, leaving in members.items() if a not in answer and not leaving)),
                rejoin=tuple(sorted(a for a, leaving in members.items() if a in answer and leaving)))
