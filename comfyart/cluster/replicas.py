"""This replica among the others (issue 24): its identity (name, address, version, fleet fingerprint), the
heartbeat that keeps its record in Redis (``store.replicas``), and ``Replica``, what the API and the metrics ask
of the cluster (``GET /api/cluster``, ``GET /readyz``, the ``comfyart_cluster_*`` gauges).

The daemon makes one with ``join`` and runs ``replica.heartbeat.run`` as a root task on every replica; its role
("leader" or "standby") comes from a callable the daemon passes (``lambda: leadership.term is not None``)."""
from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from loguru import logger

from comfyart import __version__
from comfyart.clock import now_ms
from comfyart.cluster.view import describe_cluster, differing_sections, fleet_fingerprint
from comfyart.config.settings import Settings
from comfyart.errors import TransientError
from comfyart.store.replicas import ReplicaRecord, ReplicaStore
from comfyart.store.stores import Stores

RECORD_TTL_BEATS = 3  # a record outlives three missed heartbeats, then the replica counts as gone
ROLE_POLL_S = 0.1  # a change of role is written at once, not at the next heartbeat
LEAVE_TIMEOUT_S = 2.0  # at a clean stop: a Redis that does not answer must not hold the stop up
ELECTIONS_SHOWN = 20
UNSPECIFIED_HOSTS = ("0.0.0.0", "::", "")


def replica_name(settings: Settings) -> str:
    """``cluster.name``, else HOST:PORT (this machine's host name: unique as long as two replicas on one machine
    listen on different ports)."""
    return settings.cluster.name or f"{socket.gethostname()}:{settings.server.port}"


def replica_url(settings: Settings) -> str:
    """Where other replicas and operators reach this one: ``cluster.advertise_url``, else http://HOST:PORT, with
    this machine's host name for an address that listens everywhere. Never ``server.public_url``: that is a
    proxy's or a load balancer's address, which may answer from any replica (a file asked of its holder, or an
    admin request forwarded to the leader, would land elsewhere)."""
    server = settings.server
    if settings.cluster.advertise_url:
        return settings.cluster.advertise_url.rstrip("/")
    host = socket.gethostname() if server.host in UNSPECIFIED_HOSTS else server.host
    return f"http://{f'[{host}]' if ':' in host else host}:{server.port}"


def settings_fingerprint(settings: Settings) -> dict[str, str]:
    """The hash of each section of ``settings`` that defines the fleet (``cluster.view.FLEET_SECTIONS``)."""
    return fleet_fingerprint(settings.model_dump(mode="json", exclude_defaults=True))


@dataclass(frozen=True)
class ReplicaIdentity:
    """What stays the same for the life of this process."""

    name: str
    url: str
    version: str
    started_ms: int
    pid: int
    fleet: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, settings: Settings) -> ReplicaIdentity:
        return cls(replica_name(settings), replica_url(settings), __version__, now_ms(), os.getpid(),
                   settings_fingerprint(settings))

    def record(self, heartbeat_ms: int, leading: bool) -> ReplicaRecord:
        return ReplicaRecord(self.name, self.url, self.version, self.started_ms, heartbeat_ms,
                             "leader" if leading else "standby", self.pid, dict(self.fleet))


class Heartbeat:
    """Writes this replica's record every ``interval_s`` (and at once when its role changes), expiring after
    ``RECORD_TTL_BEATS`` intervals; removes it on a clean stop. Redis down: a warning, and it beats again later
    (a root task that failed would stop the daemon)."""

    def __init__(self, store: ReplicaStore, identity: ReplicaIdentity, *, interval_s: float,
                 leading: Callable[[], bool], clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.identity = identity
        self.interval_s = interval_s
        self.leading = leading
        self.clock = clock
        self.joined = asyncio.Event()  # set once the first record is written
        self._failing = False

    @property
    def ttl_ms(self) -> int:
        return max(1, round(self.interval_s * RECORD_TTL_BEATS * 1000))

    async def run(self) -> None:
        try:
            while True:
                role = self.leading()
                await self.beat(role)
                due = self.clock() + self.interval_s
                while self.clock() < due and self.leading() == role:
                    await asyncio.sleep(min(ROLE_POLL_S, max(0.0, due - self.clock())))
        finally:
            with contextlib.suppress(TransientError, TimeoutError):
                await asyncio.shield(asyncio.wait_for(self.store.leave(self.identity.name), LEAVE_TIMEOUT_S))

    async def beat(self, leading: bool) -> None:
        try:
            await self.store.beat(self.identity.record(now_ms(), leading), self.ttl_ms)
        except TransientError as exc:
            if not self._failing:
                logger.warning("replica heartbeat failed, trying again replica={} error={}", self.identity.name, exc)
            self._failing = True
            return
        if self._failing:
            logger.info("replica heartbeat written again replica={}", self.identity.name)
        self._failing = False
        self.joined.set()


@dataclass(frozen=True)
class ClusterFigures:
    """What a scrape of ``/metrics`` reads of the cluster: live replicas, whether the lease names this replica,
    the fencing epoch, and the elections seen so far (``Replica.figures``)."""

    replicas: int
    leader: bool
    epoch: int
    elections: int


class Replica:
    """This replica as the API and the metrics see it: ``describe()`` for ``GET /api/cluster``, ``joined`` and
    ``stopping`` for ``GET /readyz``, ``figures()`` for the metrics."""

    def __init__(self, store: ReplicaStore, heartbeat: Heartbeat) -> None:
        self.store = store
        self.heartbeat = heartbeat
        self.identity = heartbeat.identity
        self.stopping = False  # set by the daemon when it starts to stop: /readyz turns clients away first
        self._elections_seen = 0
        self._last_epoch_seen = 0

    @property
    def name(self) -> str:
        return self.identity.name

    @property
    def role(self) -> str:
        return "leader" if self.heartbeat.leading() else "standby"

    @property
    def joined(self) -> bool:
        return self.heartbeat.joined.is_set()

    async def describe(self) -> dict[str, Any]:
        records = await self.store.live()
        leader = await self.store.leader()
        elections = await self.store.elections(ELECTIONS_SHOWN)
        return describe_cluster(self.name, leader, records, elections, now_ms())

    async def figures(self) -> ClusterFigures:
        """Read at each scrape: three round trips. The elections are counted from the history (the newest first,
        capped): each entry with an epoch above the last one counted adds one, so the count only grows."""
        leader = await self.store.leader()
        history = await self.store.elections(ELECTIONS_SHOWN)
        newer = [entry["epoch"] for entry in history if entry["epoch"] > self._last_epoch_seen]
        if newer:
            self._elections_seen += len(newer)
            self._last_epoch_seen = max(newer)
        return ClusterFigures(replicas=len(await self.store.live()),
                              leader=leader is not None and leader.name == self.name,
                              epoch=await self.store.epoch(), elections=self._elections_seen)


def join(settings: Settings, stores: Stores, *, leading: Callable[[], bool]) -> Replica:
    """This replica, ready for the daemon to run ``replica.heartbeat.run`` as a root task. ``leading``: whether
    this replica leads now, asked at every heartbeat (a few times a second)."""
    store = ReplicaStore(stores.client, stores.keys)
    heartbeat = Heartbeat(store, ReplicaIdentity.of(settings), interval_s=settings.cluster.heartbeat_s,
                          leading=leading)
    return Replica(store, heartbeat)


def config_difference(me: ReplicaIdentity, others: list[ReplicaRecord]) -> str | None:
    """The start-up line of a replica whose fleet configuration differs from a live replica's, or None: same."""
    for record in others:
        if record.name == me.name:
            continue
        differs = differing_sections(me.fleet, record.fleet)
        if differs:
            return (f"replica {me.name} runs beside {record.name} ({record.role}) with another fleet configuration "
                    f"(differs in: {', '.join(differs)}): it stands by while another replica leads and never "
                    f"touches that one's backends; it drives its own configuration's fleet only if it takes the "
                    f"lease (give every replica the same configuration, or another redis.prefix)")
    return None


def name_clash(me: ReplicaIdentity, others: list[ReplicaRecord]) -> str | None:
    """The start-up refusal of a replica whose name a live replica elsewhere already has, or None. Two of one name
    would take the lease from each other at every poll (each "retakes its own"), and overwrite each other's record.
    A record of this name at this replica's own address is its predecessor's (it was killed: this process holds
    its port now), taken over."""
    for record in others:
        if record.name == me.name and record.url != me.url:
            return (f"another live replica is named {me.name} (at {record.url}, pid {record.pid}): give each replica "
                    f"its own cluster.name (or leave it out: HOST:PORT)")
    return None


async def refusal(replica: Replica) -> str | None:
    """``name_clash`` against the live replicas; None when Redis does not answer (nothing to compare)."""
    try:
        return name_clash(replica.identity, await replica.store.live())
    except TransientError:
        return None


async def standby_warning(replica: Replica) -> str | None:
    """``config_difference`` against the live replicas; None when Redis does not answer (nothing to compare)."""
    try:
        return config_difference(replica.identity, await replica.store.live())
    except TransientError:
        return None
