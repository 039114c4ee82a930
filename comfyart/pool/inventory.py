"""Every backend's inventory, read from the backend itself: when it becomes healthy, every ``inventory_refresh_s``,
after it rejects a prompt for something it was thought to have, and on demand (``POST /api/pool/.../refresh``).

Backends that answer the same document share one parsed ``Inventory`` (found by its SHA-256), and one compressed
copy of the document, from which the fleet's merged ``/object_info`` is built again only when the set of documents
changes: a fleet of 64 containers of one image holds one inventory, and 64 different ones hold no parsed document.
"""
from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from loguru import logger

from comfyart.clock import now_ms
from comfyart.comfy.inventory import merge_object_info, read_inventory
from comfyart.config.fleet import PoolConfig
from comfyart.errors import BackendUnavailable
from comfyart.policy.inventory import UNLISTED, Combo, Fleet, Inventory
from comfyart.policy.needs import Needs
from comfyart.pool.backend import Backend
from comfyart.pool.registry import Pool

READ_CONCURRENCY = 8


@dataclass
class _Merged:
    digests: frozenset[str]
    object_info: dict[str, Any]
    combos: frozenset[Combo]


class Inventories:
    def __init__(self, pool: Pool, config: PoolConfig) -> None:
        self.pool = pool
        self.config = config
        self._shared: dict[str, Inventory] = {}  # digest -> the one parsed copy, while a backend has it
        self._documents: dict[str, bytes] = {}  # digest -> its /object_info, zlib-compressed
        self._embedding_lists: dict[str, bytes] = {}  # digest -> its /embeddings answer (b"": none), for the mirror
        # every distinct set of combo choices the inventories hold, each once: most recur across documents (and
        # within one: every LoRA loader lists the same files)
        self._choice_sets: dict[frozenset[str], frozenset[str]] = {}
        self._merged: _Merged | None = None
        self._merged_generation = -1
        self._distinct: list[Inventory] = []
        self._distinct_generation = -1
        self._merging: asyncio.Lock = asyncio.Lock()
        self._parsing: asyncio.Lock = asyncio.Lock()
        self._limit = asyncio.Semaphore(READ_CONCURRENCY)
        # for /metrics and the benchmarks: documents read, new ones parsed, backends whose inventory changed, reads
        # that failed
        self.counters: collections.Counter[str] = collections.Counter({"read": 0, "parsed": 0, "changed": 0,
                                                                       "failed": 0})

    @property
    def reads(self) -> int:
        return self.counters["read"]

    @property
    def parses(self) -> int:
        return self.counters["parsed"]

    # ------------------------------------------------------------------ reading
    async def read(self, backend: Backend) -> Inventory | None:
        """Read ``backend``'s inventory now; None (and its last one kept) when it does not answer. A changed
        inventory wakes the dispatcher."""
        async with self._limit:
            try:
                status, body = await backend.client.get("/object_info")
                if status == 404:  # not a ComfyUI that lists its nodes: it gets any task, and checks it
                    return self._set(backend, UNLISTED)
                if status != 200:
                    raise BackendUnavailable(f"GET /object_info answered HTTP {status}")
                embeddings = await self._embeddings(backend)
            except BackendUnavailable as exc:
                self._failed(backend, str(exc))
                return None
        self.counters["read"] += 1
        hashed = hashlib.sha256(body)
        hashed.update(b"\0" + embeddings)
        digest = hashed.hexdigest()
        try:
            inventory = self._shared.get(digest) or await self._parsed(body, embeddings, digest)
        except ValueError as exc:
            self._failed(backend, str(exc))
            return None
        return self._set(backend, inventory)

    async def _parsed(self, body: bytes, embeddings: bytes, digest: str) -> Inventory:
        """The one parsed copy of a document. Parses run one at a time, so that reads of one document that arrive
        together (a fleet of one image becoming healthy, a refresh) share the first one's, rather than each
        parsing it and keeping its own copy. ValueError: not an /object_info."""
        async with self._parsing:
            inventory = self._shared.get(digest)
            if inventory is None:
                inventory = await asyncio.to_thread(_parse, body, embeddings, digest, self._choice_sets)
                self.counters["parsed"] += 1
                self._shared[digest] = inventory
                self._documents[digest] = await asyncio.to_thread(zlib.compress, body, 1)
                self._embedding_lists[digest] = embeddings
            return inventory

    # ------------------------------------------------------------------ the mirror's (issue 24)
    def document(self, digest: str) -> tuple[bytes, bytes] | None:
        """The compressed ``/object_info`` and the ``/embeddings`` answer of a document this pool holds: what the
        leader publishes for standbys (``cluster.mirror``)."""
        body = self._documents.get(digest)
        return None if body is None else (body, self._embedding_lists.get(digest, b""))

    def shared(self, digest: str) -> Inventory | None:
        """The parsed document of a digest this pool holds."""
        return self._shared.get(digest)

    async def adopt(self, digest: str, compressed: bytes, embeddings: bytes) -> Inventory:
        """A document the leader published, parsed once per digest as if read here (ValueError: not one)."""
        known = self._shared.get(digest)
        if known is not None:
            return known
        body = await asyncio.to_thread(zlib.decompress, compressed)
        return await self._parsed(body, embeddings, digest)

    def hold(self, digest: str, inventory: Inventory, compressed: bytes, embeddings: bytes) -> None:
        """Keep an adopted document (again: a change of the pool meanwhile may have dropped it as unused) for the
        backends about to get it."""
        self._shared.setdefault(digest, inventory)
        self._documents.setdefault(digest, compressed)
        self._embedding_lists.setdefault(digest, embeddings)

    def _failed(self, backend: Backend, reason: str) -> None:
        self.counters["failed"] += 1
        logger.warning("inventory not read backend={} error={}", backend.id, reason)
        backend.inventory_error = reason

    def _set(self, backend: Backend, inventory: Inventory) -> Inventory:
        backend.inventory_read_ms, backend.inventory_error = now_ms(), None
        if self.pool.backends.get(backend.id) is backend:
            self.pool.learn_inventory(backend, inventory)  # its host's, kept when its containers stop
        if self.pool.backends.get(backend.id) is backend and backend.inventory is not inventory:
            first = backend.inventory is None
            backend.inventory = inventory
            self.pool.bump_generation()  # which backends could run what: worked out again
            self.counters["changed"] += 0 if first else 1
            self.forget_unused()
            logger.log("DEBUG" if first else "INFO", "inventory {} backend={} nodes={} models={}",
                       "read" if first else "changed", backend.id, len(inventory.nodes), len(inventory.models()))
            self.pool.notify()
        return inventory

    @staticmethod
    async def _embeddings(backend: Backend) -> bytes:
        try:
            status, body = await backend.client.get("/embeddings")
        except BackendUnavailable:
            return b""
        return body if status == 200 else b""

    async def refresh(self, backends: Iterable[Backend]) -> list[Inventory | None]:
        """Read each of ``backends`` now; what each answered (None: it did not)."""
        return list(await asyncio.gather(*(self.read(b) for b in backends)))

    async def run(self) -> None:
        """Read again every healthy backend's inventory every ``inventory_refresh_s`` (0: only on demand), and each
        health interval those a first read missed."""
        next_full = time.monotonic() + self.config.inventory_refresh_s
        while True:
            await asyncio.sleep(self.config.health_interval_s)
            full = self.config.inventory_refresh_s > 0 and time.monotonic() >= next_full
            if full:
                next_full = time.monotonic() + self.config.inventory_refresh_s
            await self.refresh([b for b in self.pool.healthy() if full or b.inventory is None])

    def forget_unused(self) -> None:
        """Drop the documents no backend of the pool has any more."""
        used = {b.inventory.digest for b in self.pool.backends.values() if b.inventory is not None}
        used |= {inventory.digest for inventory in self.pool.host_inventories.values()}
        unused = self._shared.keys() - used
        for digest in unused:
            del self._shared[digest]
            self._documents.pop(digest, None)
            self._embedding_lists.pop(digest, None)
        if unused and not self._parsing.locked():  # (a parse adds to them meanwhile)
            self._choice_sets = {s: s for inventory in self._shared.values() for s in inventory.choices.values()}

    # ------------------------------------------------------------------ the fleet's
    def known(self) -> list[tuple[Backend, Inventory]]:
        """Every backend of the pool with the inventory it last reported, whatever its state now."""
        return [(b, b.inventory) for b in self.pool.backends.values() if b.inventory is not None]

    def distinct(self) -> list[Inventory]:
        """The distinct inventories that list something: the backends', and those hosts' containers last reported
        (a host whose containers were scaled away still has what they had). Worked out again only when the pool's
        generation changed (a backend joined or left, an inventory changed): every submission asks."""
        if self._distinct_generation != self.pool.generation:
            inventories = [inv for _, inv in self.known()] + list(self.pool.host_inventories.values())
            self._distinct = list({inv.digest: inv for inv in inventories if inv.listed}.values())
            self._distinct_generation = self.pool.generation
            self.forget_unused()
        return self._distinct

    async def merged(self) -> _Merged | None:
        """The fleet's ``/object_info`` (every node class any backend has, each combo's choices the union of every
        backend's) and its combo inputs; None while no backend has reported one. Built again, off the event loop,
        only when the set of documents changed."""
        if self._merged is not None and self._merged_generation == self.pool.generation:
            return self._merged  # nothing changed: the dispatcher asks at every window
        generation = self.pool.generation
        digests = frozenset(inv.digest for inv in self.distinct())
        if not digests:
            return None
        async with self._merging:
            if self._merged is None or self._merged.digests != digests:
                documents = [self._documents[d] for d in sorted(digests) if d in self._documents]
                object_info = await asyncio.to_thread(_merge, documents)
                combos = frozenset(c for inv in self.distinct() for c in inv.choices)
                self._merged = _Merged(digests, object_info, combos)
            self._merged_generation = generation
        return self._merged

    async def fleet(self) -> Fleet | None:
        """The fleet as a submission is checked against it; None while no backend has reported its inventory."""
        merged = await self.merged()
        return None if merged is None else Fleet(merged.object_info, merged.combos, tuple(self.distinct()))

    async def object_info(self) -> dict[str, Any] | None:
        merged = await self.merged()
        return None if merged is None else merged.object_info

    def unrunnable_reason(self, needs: Needs) -> str | None:
        """Why no backend of the pool, whatever its state, could run a task with ``needs``, by the inventories
        they last reported; None when one could (or one lists nothing, and would check the task itself)."""
        if any(not inventory.listed for _, inventory in self.known()):
            return None
        return Fleet({}, frozenset(), tuple(self.distinct())).refusal(needs)


def _parse(body: bytes, embeddings: bytes, digest: str,
           shared: dict[frozenset[str], frozenset[str]] | None = None) -> Inventory:
    try:
        object_info = json.loads(body)
        listed = json.loads(embeddings) if embeddings else None
    except (RecursionError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"/object_info is not JSON: {str(exc)[:80]}") from None
    if not isinstance(object_info, dict):
        raise ValueError("/object_info is not an object")
    return read_inventory(object_info, digest, listed, shared)


def _merge(documents: Sequence[bytes]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for document in documents:
        merge_object_info(merged, json.loads(zlib.decompress(document)))
    return merged
