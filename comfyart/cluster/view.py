"""What an operator is shown of the replicas (pure): ``GET /api/cluster``'s answer, ``GET /readyz``'s verdict, and
the fleet configuration's fingerprint that tells two replicas configured differently apart."""
from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from comfyart.store.replicas import LeaderRecord, ReplicaRecord

# the sections that say which backends the fleet has and how it runs them: two replicas that differ in one of them
# would drive another fleet when they lead
FLEET_SECTIONS = ("docker", "processes", "pool", "static_backends", "instance")


def fleet_fingerprint(sections: Mapping[str, Any]) -> dict[str, str]:
    """A stable hash of each fleet section (``FLEET_SECTIONS``), given as the settings' JSON with defaults left
    out (``model_dump(mode="json", exclude_defaults=True)``): a field a newer version adds with its default, or a
    value written out equal to its default, changes nothing."""
    return {name: _digest(sections.get(name)) for name in FLEET_SECTIONS}


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def differing_sections(mine: Mapping[str, str], theirs: Mapping[str, str]) -> list[str]:
    """The fleet sections whose hashes differ (a section one side does not list counts as differing)."""
    return sorted(name for name in set(mine) | set(theirs) if mine.get(name) != theirs.get(name))


def iso(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")


def describe_cluster(me: str, leader: LeaderRecord | None, replicas: Sequence[ReplicaRecord],
                     elections: Sequence[Mapping[str, Any]], now_ms: int) -> dict[str, Any]:
    """``GET /api/cluster``: this replica's name, the leader (null: none holds the lease now), every live replica
    (``leader``: the lease names it; ``config_differs``: its fleet configuration is not the leader's, or, with no
    leader, not this replica's; ``differing_sections``: which) and the latest elections, newest first. ``now_ms``:
    the answering replica's clock, which heartbeat ages are counted against."""
    reference = next((r for r in replicas if leader is not None and r.name == leader.name), None) \
        or next((r for r in replicas if r.name == me), None)
    described = []
    for record in replicas:
        differs = differing_sections(reference.fleet, record.fleet) if reference is not None else []
        described.append({**record.describe(), "leader": leader is not None and record.name == leader.name,
                          "config_differs": bool(differs), "differing_sections": differs})
    return {"replica": me, "now_ms": now_ms,
            "leader": None if leader is None else {"name": leader.name, "epoch": leader.epoch,
                                                   "since_ms": leader.since_ms, "since": iso(leader.since_ms)},
            "replicas": described,
            "elections": [{**entry, "since": iso(entry["since_ms"])} if isinstance(entry.get("since_ms"), int)
                          else dict(entry) for entry in elections]}


def unready_reason(*, redis_answers: bool, joined: bool, pool_ready: bool, stopping: bool,
                   events_connected: bool = True) -> str | None:
    """Why this replica should take no traffic now (``GET /readyz`` answers 503 with it), or None: ready. In the
    order an operator fixes them: a stopping replica is going anyway; without Redis nothing works."""
    if stopping:
        return "stopping"
    if not redis_answers:
        return "redis unreachable"
    if not joined:
        return "not joined: its first heartbeat is not written yet"
    if not events_connected:
        return "event bridge not connected: task events from other replicas do not arrive"
    if not pool_ready:
        return "pool not ready: leftovers and static backends not handled yet, or no pool mirrored from the leader"
    return None
