"""The pool as the leader publishes it and a standby replica mirrors it (issue 24, follower parity).

The leader's ``PoolPublisher`` (``cluster.mirror``) turns its pool into a ``snapshot``: every backend's identity,
health, mode, load, VRAM and inventory digest, the hosts' last inventories, and what ``GET /api/pool`` (``describe``),
``GET /api/scheduler`` (``scheduler``) and the autoscaler (``decision``) answer. A standby applies it with
``apply_backends``: its ``Pool`` holds the same ``Backend`` objects (each with a client of the same URL, so the API's
proxies to a backend work on any replica), set field by field, with no transition, health check or container
touched; the parsed inventories come from ``Inventories`` by digest. ``Pool.describe`` and ``describe_decision``
then answer the leader's words (``Mirrored``), at most a publication old.

Decisions: the URL travels unredacted (Redis is the cluster's trusted store; the API redacts it when it shows it);
a backend whose URL or kind changed is a new ``Backend``; the in-flight prompts travel too (prompt id -> task id) so
that a standby's counts and pool events match the leader's.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from comfyart.models import BackendMode, BackendState
from comfyart.policy.inventory import UNLISTED, Inventory
from comfyart.pool.backend import Backend
from comfyart.pool.registry import Pool

FORMAT = 1  # the snapshot's layout; a standby ignores one of another (a replica of another version leads)


@dataclass(frozen=True)
class Mirrored:
    """What a standby's pool answers for the leader's: ``version`` of the snapshot applied, the leader's epoch,
    when it was taken, and the JSON texts of ``Pool.describe`` (parsed again per answer: callers add to it), the
    dispatcher's ``describe`` and the autoscaler's last decision."""

    version: str
    epoch: int
    at_ms: int
    describe_json: str
    scheduler: dict[str, Any]
    decision: dict[str, Any] | None

    def describe(self) -> dict[str, Any]:
        described: dict[str, Any] = json.loads(self.describe_json)
        return described


def backend_entry(backend: Backend) -> dict[str, Any]:
    """One backend as a snapshot carries it."""
    inventory = backend.inventory
    return {"id": backend.id, "kind": backend.kind, "host": backend.host, "url": backend.url,
            "port": backend.port, "gpu": backend.gpu, "name": backend.name, "state": backend.state.value,
            "mode": backend.mode.value, "source": backend.source, "tags": sorted(backend.tags),
            "weight": backend.weight, "prompts": dict(backend.prompts), "tasks_done": backend.tasks_done,
            "vram_total": backend.vram_total, "vram_free": backend.vram_free, "ram_free": backend.ram_free,
            "inventory": None if inventory is None else inventory.digest,
            "inventory_read_ms": backend.inventory_read_ms, "inventory_error": backend.inventory_error,
            "created_ms": backend.created_ms, "error": backend.error}


def snapshot(pool: Pool, scheduler: dict[str, Any]) -> dict[str, Any]:
    """The pool as the leader publishes it (no time or epoch in it: two snapshots of an unchanged pool are equal
    but for the durations ``describe`` counts)."""
    return {"format": FORMAT, "backends": [backend_entry(b) for b in pool.backends.values()],
            "hosts": [[kind, host, inventory.digest] for (kind, host), inventory in pool.host_inventories.items()],
            "describe": pool.describe(), "scheduler": scheduler, "decision": pool.describe_decision()}


def digests(snap: Mapping[str, Any]) -> set[str]:
    """The inventory documents ``snap`` names (the unlisted marker needs none)."""
    named = {entry["inventory"] for entry in snap.get("backends", [])} | {h[2] for h in snap.get("hosts", [])}
    return {d for d in named if isinstance(d, str) and d != UNLISTED.digest}


def _inventory(digest: Any, inventories: Mapping[str, Inventory]) -> Inventory | None:
    if digest == UNLISTED.digest:
        return UNLISTED
    return inventories.get(digest) if isinstance(digest, str) else None


def _fresh(entry: Mapping[str, Any], pool: Pool) -> Backend:
    return Backend(entry["id"], entry["kind"], entry["host"], entry["url"], pool.connect(entry["url"]),
                   port=entry.get("port"), gpu=entry.get("gpu"), name=entry.get("name", ""),
                   source=entry.get("source", "config"), created_ms=entry.get("created_ms") or 0)


def _update(backend: Backend, entry: Mapping[str, Any], inventory: Inventory | None) -> bool:
    """Set ``backend``'s fields from ``entry``; whether what the pool works out from them (state, mode, tags,
    weight, VRAM size, inventory) changed."""
    before = (backend.state, backend.mode, backend.tags, backend.weight, backend.vram_total, backend.inventory)
    backend.state, backend.mode = BackendState(entry["state"]), BackendMode(entry["mode"])
    backend.tags, backend.weight = frozenset(entry.get("tags", ())), float(entry.get("weight", 1.0))
    backend.prompts = {str(k): str(v) for k, v in (entry.get("prompts") or {}).items()}
    backend.tasks_done = int(entry.get("tasks_done", 0))
    backend.vram_total, backend.vram_free, backend.ram_free = (entry.get("vram_total"), entry.get("vram_free"),
                                                              entry.get("ram_free"))
    backend.inventory = inventory
    backend.inventory_read_ms, backend.inventory_error = entry.get("inventory_read_ms"), entry.get("inventory_error")
    backend.error = entry.get("error")
    return before != (backend.state, backend.mode, backend.tags, backend.weight, backend.vram_total,
                      backend.inventory)


def apply_backends(pool: Pool, snap: Mapping[str, Any], inventories: Mapping[str, Inventory]) -> bool:
    """Make ``pool``'s backends and host inventories those of ``snap`` (``inventories``: the parsed documents by
    digest; a digest missing there leaves that backend without one until the next snapshot). No transition runs:
    fields are set. Whether anything the pool works out from them changed (its generation then went up)."""
    changed = False
    wanted = {entry["id"]: entry for entry in snap.get("backends", [])}
    for backend_id in [b for b in pool.backends if b not in wanted]:
        pool.backends.pop(backend_id)  # (bumps the generation)
        changed = True
    for backend_id, entry in wanted.items():
        backend = pool.backends.get(backend_id)
        if backend is None or backend.url != entry["url"] or backend.kind != entry["kind"]:
            backend = _fresh(entry, pool)
            _update(backend, entry, _inventory(entry.get("inventory"), inventories))
            pool.backends[backend_id] = backend  # (bumps the generation)
            changed = True
        elif _update(backend, entry, _inventory(entry.get("inventory"), inventories)):
            pool.bump_generation()
            changed = True
    hosts = {(kind, host): inv for kind, host, digest in snap.get("hosts", [])
             if (inv := _inventory(digest, inventories)) is not None}
    if hosts != pool.host_inventories:
        pool.host_inventories = hosts
        pool.bump_generation()
        changed = True
    return changed


def mirrored_of(version: str, epoch: int, at_ms: int, snap: Mapping[str, Any]) -> Mirrored:
    return Mirrored(version, epoch, at_ms, json.dumps(snap.get("describe") or {}), dict(snap.get("scheduler") or {}),
                    snap.get("decision"))
