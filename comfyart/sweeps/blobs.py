"""The blob GC of Comfy API v2, a loop the daemon owns: a blob (``files.assets``) outlives its assets (they expire
by Redis TTL, or are deleted), so every ``interval_s`` this removes the blobs no live asset of any owner names, and
the upload temp files (``assets/tmp``) nothing has written for an hour. Its first sweep runs at start-up.

Safety: an asset may be made of a blob at any moment (an upload of the same bytes, ``from-hash``), and a delivery
to a backend reads a blob after checking its owner's asset. Each of them claims the blob first (``BlobStore.hold``
or the upload's link: the blob's mtime is now), then acts. A blob goes only when ``policy.assets.blob_removable``
says so twice: from a listing and Redis, then again after it was moved aside (one atomic rename) with Redis read
again and the mtime of the moved file. A claim made before the move shows in that mtime; one made after finds no
blob (an upload installs its own again; ``from-hash`` answers 404, a delivery fails as for a deleted asset); an
asset made after the move was claimed first. The grace (``BLOB_GRACE_MS``, an hour) bounds the time from a claim
to its asset record. A blob moved aside when the process stopped is judged again by the next sweep.

Cost per sweep: a directory listing of every blob (in the blob store's file thread, one subdirectory at a time), a
Redis round trip per ``BATCH`` blobs past the grace (500 ZCOUNTs: about 7 ms on a local redis-server), and one more
per batch of those moved aside. In Redis, each blob with an asset has its index of every owner's assets
(``store.keys`` ``P:blob:{hex}:assets``): about 200 bytes with one asset, 50 more per asset (measured); the sweep
drops it with the blob. Every upload, from-hash and delivery claims its blob with one utime (file thread).
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from loguru import logger

from comfyart.clock import now_ms
from comfyart.errors import TransientError
from comfyart.files.assets import BlobStore
from comfyart.policy.assets import BLOB_GRACE_MS, TMP_MAX_AGE_MS, blob_removable, tmp_leftover
from comfyart.store.assets import AssetStore

SWEEP_INTERVAL_S = 600.0
BATCH = 500  # blobs per Redis round trip


@dataclass
class SweepCount:
    """What one sweep did: blobs removed, blobs put back (an asset appeared while they were aside), temp files
    removed, bytes freed."""

    removed: int = 0
    restored: int = 0
    tmp_removed: int = 0
    freed_bytes: int = 0


class BlobSweep:
    """``run``: sweep at once, then every ``interval_s`` until cancelled. ``clock`` and the ages come in, so a
    test can sweep at any time."""

    def __init__(self, blobs: BlobStore, assets: AssetStore, *, interval_s: float = SWEEP_INTERVAL_S,
                 grace_ms: int = BLOB_GRACE_MS, tmp_max_age_ms: int = TMP_MAX_AGE_MS,
                 clock: Callable[[], int] = now_ms) -> None:
        self.blobs, self.assets = blobs, assets
        self.interval_s, self.grace_ms, self.tmp_max_age_ms, self.clock = interval_s, grace_ms, tmp_max_age_ms, clock

    async def run(self) -> None:
        while True:
            try:
                count = await self.sweep()
            except TransientError as exc:  # Redis away: the next sweep tries again; blobs aside wait for it
                logger.warning("v2 blob sweep postponed error={}", exc)
            else:
                if count.removed or count.restored or count.tmp_removed:
                    logger.info("v2 blobs swept removed={} restored={} tmp_removed={} freed_bytes={}",
                                count.removed, count.restored, count.tmp_removed, count.freed_bytes)
            await asyncio.sleep(self.interval_s)

    async def sweep(self) -> SweepCount:
        count = SweepCount()
        await self._settle(await self.blobs.condemned(), count)  # left aside by a sweep that stopped half-way
        now = self.clock()
        stale = [name for name, mtime in await self.blobs.tmp_files()
                 if tmp_leftover(mtime_ms=mtime, now_ms=now, max_age_ms=self.tmp_max_age_ms)]
        count.freed_bytes += await self.blobs.remove_tmp(stale)
        count.tmp_removed = len(stale)
        for subdir in await self.blobs.blob_dirs():
            ages = await self.blobs.blob_ages(subdir)
            for start in range(0, len(ages), BATCH):
                await self._sweep_batch(ages[start:start + BATCH], count)
        return count

    async def _sweep_batch(self, ages: list[tuple[str, int]], count: SweepCount) -> None:
        now = self.clock()
        old = [(hex_digest, mtime) for hex_digest, mtime in ages
               if blob_removable(referenced=False, mtime_ms=mtime, now_ms=now, grace_ms=self.grace_ms)]
        live = await self.assets.live_blobs([hex_digest for hex_digest, _ in old], now_ms=now)
        doomed = [hex_digest for hex_digest, mtime in old
                  if blob_removable(referenced=hex_digest in live, mtime_ms=mtime, now_ms=now, grace_ms=self.grace_ms)]
        if doomed:
            await self._settle(await self.blobs.condemn(doomed), count)

    async def _settle(self, aside: list[tuple[str, int]], count: SweepCount) -> None:
        """Judge blobs moved aside again, Redis read after the move: remove them, or put them back."""
        if not aside:
            return
        now = self.clock()
        try:
            live = await self.assets.live_blobs([hex_digest for hex_digest, _ in aside], now_ms=now)
        except TransientError:  # cannot tell: every blob goes back, none stays missing until the next sweep
            count.restored += len(aside)
            await self.blobs.settle([], [hex_digest for hex_digest, _ in aside])
            raise
        remove: list[str] = []
        restore: list[str] = []
        for hex_digest, mtime in aside:
            removable = blob_removable(referenced=hex_digest in live, mtime_ms=mtime, now_ms=now,
                                       grace_ms=self.grace_ms)
            (remove if removable else restore).append(hex_digest)
        count.freed_bytes += await self.blobs.settle(remove, restore)
        count.removed += len(remove)
        count.restored += len(restore)
        await self.assets.forget_blobs(remove, now_ms=now)
