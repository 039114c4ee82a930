"""Files from any replica (issue 24): a file stored by one replica is served and delivered by every other.

Default, with no infrastructure beyond Redis: pull from the holder. Each stored file names the replica that holds
it: an output its record (``OutputFile.replica``, set by the leader that downloaded it), an uploaded input or v2
blob the index in Redis (``store.files.FileIndex``, written by the replica that took the upload). A replica
asked for a file it lacks looks, in order: its own store, its cache (``files.cache.FileCache``), the holder
(``cluster.peers.PeerClient`` through the registry's URL), and for inputs and blobs, named by their content, every
other live replica (any copy is the copy). None has it: None (404) when the holder answered it has none, else
FileUnreachable, one line: "input X is on replica Y, which is not reachable" (503).

``FileLocator`` is the stores' ``remote`` (``files.cache.RemoteFiles``), set by ``attach``: the call sites keep
asking the stores (``locate``). One process (``stores.replicated`` false) or a shared data directory
(``cluster.shared_files``) attaches nothing: no index writes, no peer traffic, as before.

Cost: the file lives on its holder's disk only; the first byte of a copy comes after the whole copy is here; one
copy per replica that serves it, kept to ``cluster.file_cache_mb`` by LRU. Not done: the v2 retention sweep
removes the outputs on the leader's disk only; outputs an earlier leader downloaded stay on its disk (and in caches,
until evicted).
"""
from __future__ import annotations

import contextlib
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

from comfyart.cluster.peers import Miss, PeerClient
from comfyart.cluster.replicas import replica_name
from comfyart.config.settings import Settings
from comfyart.errors import TransientError
from comfyart.files.assets import BlobStore
from comfyart.files.cache import FileCache, FileUnreachable, relpath
from comfyart.files.inputs import InputStore
from comfyart.files.outputs import OutputStore
from comfyart.store.files import FileIndex
from comfyart.store.replicas import ReplicaStore
from comfyart.store.stores import Stores

CONTENT_ADDRESSED = ("inputs", "blobs")
LABELS = {"inputs": "input", "blobs": "blob", "outputs": "output"}


def candidates(kind: str, holder: str | None, live: dict[str, str], me: str) -> list[tuple[str, str]]:
    """(name, url) of the replicas to ask, in order: the holder, if live; then, for content-addressed kinds, every
    other live replica (by name). Never this replica."""
    order = [holder] if holder is not None and holder in live and holder != me else []
    if kind in CONTENT_ADDRESSED:
        order += sorted(name for name in live if name not in (holder, me))
    return [(name, live[name]) for name in order]


def unreachable(kind: str, name: str, holder: str | None) -> str:
    """The one line a caller sees when no replica gave a file it should have."""
    what = f"{LABELS.get(kind, kind)} {name}"
    if holder is None:
        return f"{what} is on no replica that answers"
    return f"{what} is on replica {holder}, which is not reachable"


@dataclass
class FileLocator:
    """The stores' view of the other replicas' files (``files.cache.RemoteFiles``)."""

    me: str
    index: FileIndex
    registry: ReplicaStore
    cache: FileCache
    peers: PeerClient

    async def stored(self, kind: str, name: str) -> None:
        """An upload taken here: the index names this replica. Redis away: the file stays readable here, and a
        warning says the others cannot find it."""
        try:
            await self.index.hold(kind, name, self.me)
        except TransientError as exc:
            logger.warning("file index not written, other replicas will not find it kind={} name={} error={}",
                           kind, name, exc)

    async def known(self, kind: str, names: Collection[str]) -> set[str]:
        return set(await self.index.holders(kind, names))

    async def fetch(self, kind: str, name: str, holder: str | None = None) -> Path | None:
        if relpath(kind, name) is None:
            return None
        cached = await self.cache.get(kind, name)
        if cached is not None:
            return cached
        if holder is None and kind in CONTENT_ADDRESSED:
            holder = (await self.index.holders(kind, [name])).get(name)
            if holder is None:
                return None  # not one of ours: nobody took its upload
        live = {record.name: record.url for record in await self.registry.live()}
        holder_absent = False
        for peer, url in candidates(kind, holder, live, self.me):
            got = await self.peers.fetch(url, kind, name)
            if isinstance(got, Path):
                logger.debug("file fetched from a peer kind={} name={} peer={}", kind, name, peer)
                return got
            holder_absent = holder_absent or (peer == holder and got is Miss.ABSENT)
        if holder == self.me or holder_absent:
            return None  # its holder no longer has it (removed, or this replica's own file gone): a plain 404
        raise FileUnreachable(unreachable(kind, name, holder))

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self.peers.aclose()
        await self.cache.aclose()


def wanted(settings: Settings, stores: Stores) -> bool:
    """Whether this daemon fetches files from other replicas: replicated, without a shared data directory."""
    return stores.replicated and not settings.cluster.shared_files


async def attach(settings: Settings, stores: Stores, me: str, *, inputs: InputStore, outputs: OutputStore,
                 blobs: BlobStore | None) -> FileLocator | None:
    """A locator set as the ``remote`` of each store, or None where none is wanted (``wanted``). Makes the
    cluster's peer secret if no replica made it yet."""
    if not wanted(settings, stores):
        return None
    index = FileIndex(stores.client, stores.keys)
    cache = FileCache(settings.data_dir / "cache", settings.cluster.file_cache_mb << 20)
    locator = FileLocator(me, index, ReplicaStore(stores.client, stores.keys), cache,
                          PeerClient(cache, await index.secret()))
    inputs.remote = outputs.remote = locator
    outputs.holder = me
    if blobs is not None:
        blobs.remote = locator
    return locator


async def file_stores(settings: Settings, stores: Stores) -> tuple[OutputStore, InputStore, BlobStore,
                                                                   FileLocator | None]:
    """The stores of files on this replica's disk (outputs, uploaded inputs, v2 blobs) and, where wanted, the
    locator ``attach``ed to them."""
    outputs, inputs = OutputStore(settings.data_dir / "outputs"), InputStore(settings.data_dir / "inputs")
    blobs = BlobStore(settings.data_dir / "assets")  # the v2 API's uploads
    locator = await attach(settings, stores, replica_name(settings), inputs=inputs, outputs=outputs, blobs=blobs)
    return outputs, inputs, blobs, locator
