"""Follower parity (issue 24): the leader publishes its pool, every standby replica mirrors it.

``PoolPublisher.run`` is a leader loop (its writes carry the term's fence): once the pool is ready, it publishes a
snapshot (``pool.mirrored.snapshot``) whenever the pool's backends, hosts, scheduler settings or autoscaler decision
change (woken by ``Pool.wait_changed``, at most every ``MIN_INTERVAL_S``), and at most every ``DESCRIBE_EVERY_S``
when only ``describe``'s running figures (idle and age durations) moved. Each inventory document is stored once
per term before the first snapshot that names it.

``PoolMirror.run`` runs on every replica and does nothing while this replica leads (its own pool runs then; it may
lead, step down and follow again: the term's reset empties the pool and the mirror fills it again). Otherwise it
polls the snapshot's version every ``POLL_S`` (one short HGET: simpler than a stream entry, and independent of the
event bridge; a standby is at most about a publication plus a poll behind) and applies a new one: documents parsed
once per digest (``Inventories.adopt``), backends set field by field (``apply_backends``: no transition, no health
check, no container), ``pool.mirrored`` for the descriptions, then ``pool.ready``. The API reads that pool as on
the leader: ``/object_info``, admission against the fleet, ``/api/pool``, ``/healthz``, ``/readyz``.
"""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from loguru import logger

from comfyart.clock import now_ms
from comfyart.errors import TransientError
from comfyart.policy.inventory import Inventory
from comfyart.pool.inventory import Inventories
from comfyart.pool.mirrored import FORMAT, apply_backends, digests, mirrored_of, snapshot
from comfyart.pool.registry import Pool
from comfyart.store.cluster_pool import ClusterPool, PoolDocument
from comfyart.store.frames import binary_client
from comfyart.store.stores import Stores

MIN_INTERVAL_S = 0.2  # between two publications: a busy pool changes at every prompt's end
DESCRIBE_EVERY_S = 1.0  # a snapshot whose only change is describe's durations waits this long
POLL_S = 0.25  # a standby asks for the snapshot's version this often
CONNECTIONS = 2  # of the mirror's own client (bytes replies: the documents are compressed)


class PoolPublisher:
    def __init__(self, store: ClusterPool, pool: Pool, inventories: Inventories,
                 scheduler: Callable[[], dict[str, Any]]) -> None:
        self.store = store
        self.pool = pool
        self.inventories = inventories
        self.scheduler = scheduler  # the dispatcher's ``describe`` (GET /api/scheduler)
        self.published = 0  # snapshots written since start

    async def run(self) -> None:
        """Publish for one leader's term, from a fresh start (every document stored again)."""
        stored: set[str] = set()
        last: dict[str, Any] | None = None
        last_at = 0.0
        await self.pool.ready.wait()
        while True:
            snap = snapshot(self.pool, self.scheduler())
            if _worth_publishing(last, snap, time.monotonic() - last_at):
                try:
                    await self._publish(snap, stored)
                    last, last_at = snap, time.monotonic()
                except TransientError as exc:
                    logger.warning("pool snapshot not published, trying again error={}", exc)
            await asyncio.sleep(MIN_INTERVAL_S)
            await self.pool.wait_changed(DESCRIBE_EVERY_S)

    async def _publish(self, snap: dict[str, Any], stored: set[str]) -> None:
        for digest in sorted(digests(snap) - stored):
            document = self.inventories.document(digest)
            if document is not None:
                await self.store.put_inventory(digest, *document)
                stored.add(digest)
        await self.store.publish(json.dumps({**snap, "at_ms": now_ms()}, separators=(",", ":")).encode())
        self.published += 1


def _worth_publishing(last: dict[str, Any] | None, snap: dict[str, Any], since_s: float) -> bool:
    """A first snapshot, or one whose backends, hosts, scheduler or decision changed; describe's durations alone
    after ``DESCRIBE_EVERY_S``."""
    if last is None:
        return True
    if any(last[part] != snap[part] for part in ("backends", "hosts", "scheduler", "decision")):
        return True
    return last["describe"] != snap["describe"] and since_s >= DESCRIBE_EVERY_S


class PoolMirror:
    def __init__(self, store: ClusterPool, pool: Pool, inventories: Inventories, *,
                 leading: Callable[[], bool]) -> None:
        self.store = store
        self.pool = pool
        self.inventories = inventories
        self.leading = leading  # this replica leads now: its own pool runs, nothing to mirror
        self.applied = 0  # snapshots applied since start
        self._failing = False

    async def run(self) -> None:
        """Until cancelled (the daemon's stop); then the store's connections close (this root loop outlives the
        publisher, a leader loop the term stops first)."""
        try:
            while True:
                if not self.leading():
                    try:
                        await self.follow()
                        self._failing = False
                    except TransientError as exc:
                        if not self._failing:
                            logger.warning("pool mirror cannot read the leader's pool, trying again error={}", exc)
                        self._failing = True
                await asyncio.sleep(POLL_S)
        finally:
            await self.store.aclose()

    async def follow(self) -> bool:
        """Apply the latest snapshot if it is not the one applied; whether one was applied."""
        version = await self.store.version()
        mirrored = self.pool.mirrored
        if version is None or (mirrored is not None and mirrored.version == version):
            return False
        document = await self.store.latest()
        if document is None:
            return False
        snap = json.loads(document.json)
        if snap.get("format") != FORMAT:
            logger.warning("pool snapshot of another format ignored format={}", snap.get("format"))
            return False
        documents = await self._documents(digests(snap))
        if self.leading():  # a term began meanwhile: its own pool runs
            return False
        self._apply(document, snap, documents)
        return True

    async def _documents(self, wanted: set[str]) -> dict[str, tuple[Inventory, bytes, bytes]]:
        """Each wanted document, parsed: the one held here already, else read from Redis (one missing or
        unreadable leaves its backends without an inventory until a later snapshot)."""
        found: dict[str, tuple[Inventory, bytes, bytes]] = {}
        for digest in wanted:
            held, raw = self.inventories.shared(digest), self.inventories.document(digest)
            if held is None or raw is None:
                raw = await self.store.inventory(digest)
                if raw is None:
                    continue
                try:
                    held = await self.inventories.adopt(digest, *raw)
                except ValueError as exc:
                    logger.warning("published inventory not read digest={} error={}", digest[:12], exc)
                    continue
            found[digest] = (held, *raw)
        return found

    def _apply(self, document: PoolDocument, snap: dict[str, Any],
               documents: dict[str, tuple[Inventory, bytes, bytes]]) -> None:
        for digest, (inventory, compressed, embeddings) in documents.items():
            self.inventories.hold(digest, inventory, compressed, embeddings)
        changed = apply_backends(self.pool, snap, {d: held[0] for d, held in documents.items()})
        epoch = int(document.version.partition(":")[0] or 0)
        self.pool.mirrored = mirrored_of(document.version, epoch, int(snap.get("at_ms") or 0), snap)
        self.inventories.forget_unused()
        self.applied += 1
        if not self.pool.ready.is_set():
            logger.info("pool mirrored from the leader epoch={} backends={}", epoch, len(self.pool.backends))
        self.pool.ready.set()
        if changed:
            self.pool.notify()


@dataclass(frozen=True)
class MirrorLoops:
    """What the daemon runs for the mirror: the publisher among the leader's loops, the mirror among every
    replica's (both empty in one process: nothing to mirror)."""

    leader_loops: dict[str, Callable[[], Awaitable[None]]] = field(default_factory=dict)
    loops: dict[str, Callable[[], Awaitable[None]]] = field(default_factory=dict)


def build(stores: Stores, pool: Pool, inventories: Inventories, scheduler: Callable[[], dict[str, Any]], *,
          leading: Callable[[], bool]) -> MirrorLoops:
    """The publisher and the mirror of a replicated daemon (``stores.replicated``); none in one process."""
    if not stores.replicated:
        return MirrorLoops()
    store = ClusterPool(binary_client(stores.client, CONNECTIONS), stores.keys)
    return MirrorLoops({"pool publisher": PoolPublisher(store, pool, inventories, scheduler).run},
                       {"pool mirror": PoolMirror(store, pool, inventories, leading=leading).run})
