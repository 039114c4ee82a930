"""The v2 blob GC (sweeps.blobs) on a real directory and a real redis-server: blobs no live asset names go,
others stay, upload leftovers go after an hour, and a blob claimed or given an asset while the sweep was deciding
is put back."""
from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from comfyart.errors import TransientError
from comfyart.files.assets import Blob, BlobStore
from comfyart.policy.assets import BLOB_GRACE_MS
from comfyart.store.assets import AssetStore
from comfyart.store.keys import Keys
from comfyart.sweeps.blobs import BlobSweep, SweepCount
from tests.support.daemon import make_settings, running_daemon
from tests.support.ports import free_port

HOUR_MS = 3_600_000


def _now() -> int:
    return int(time.time() * 1000)


@pytest.fixture
async def blobs(tmp_path: Path) -> AsyncIterator[BlobStore]:
    store = BlobStore(tmp_path / "assets")
    yield store
    await store.aclose()


@pytest.fixture
def assets(redis_client: aioredis.Redis) -> AssetStore:
    return AssetStore(redis_client, Keys("test"))


async def _chunks(body: bytes) -> AsyncIterator[bytes]:
    yield body


async def _blob(blobs: BlobStore, body: bytes) -> Blob:
    return await blobs.write_stream(_chunks(body), max_bytes=1 << 20)


async def _asset(assets: AssetStore, blob: Blob, owner: str | None = "alice", expires_ms: int | None = None) -> None:
    await assets.create(owner, hash=blob.hash, size=blob.size, content_type="image/png", file_path="a.png",
                        now_ms=_now(), expires_ms=expires_ms)


async def test_a_blob_goes_once_no_live_asset_names_it_and_the_grace_is_over(blobs: BlobStore,
                                                                            assets: AssetStore) -> None:
    kept, expired, orphan = [await _blob(blobs, body) for body in (b"kept", b"expired", b"orphan")]
    await _asset(assets, kept, "bob")
    await _asset(assets, expired, None, expires_ms=_now() + 60_000)
    # within the grace nothing goes, asset or none: an upload's record may be on its way
    assert await BlobSweep(blobs, assets).sweep() == SweepCount()
    ahead = BlobSweep(blobs, assets, clock=lambda: _now() + 2 * HOUR_MS)
    assert await ahead.sweep() == SweepCount(removed=2, freed_bytes=len(b"expired") + len(b"orphan"))
    assert kept.path.read_bytes() == b"kept"
    assert not expired.path.exists() and not orphan.path.exists()
    assert not list(blobs.condemned_dir.iterdir())
    assert await ahead.sweep() == SweepCount()
    # the bytes come back with the next upload of them
    again = await _blob(blobs, b"orphan")
    assert again.created_new and again.path.read_bytes() == b"orphan"


async def test_upload_leftovers_go_after_an_hour_and_an_upload_in_progress_is_left_alone(
        blobs: BlobStore, assets: AssetStore) -> None:
    blobs.tmp_dir.mkdir(parents=True)
    old, recent = blobs.tmp_dir / ".upload-old", blobs.tmp_dir / ".upload-recent"
    old.write_bytes(b"x" * 10)
    recent.write_bytes(b"y")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    started, finish = asyncio.Event(), asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"first"
        started.set()
        await finish.wait()
        yield b"second"

    upload = asyncio.create_task(blobs.write_stream(slow(), max_bytes=1 << 20))
    await started.wait()
    count = await BlobSweep(blobs, assets).sweep()
    assert count == SweepCount(tmp_removed=1, freed_bytes=10)
    assert not old.exists() and recent.exists()
    finish.set()
    blob = await upload
    assert blob.path.read_bytes() == b"firstsecond"


async def test_a_blob_claimed_after_the_listing_was_read_is_put_back(blobs: BlobStore, assets: AssetStore) -> None:
    """The race: the sweep read the blob's old mtime and found no asset; then an upload of the same bytes (or
    from-hash, or a delivery) claimed it, and makes its asset only after the sweep moved the blob aside."""
    blob = await _blob(blobs, b"wanted")
    stale_mtime = _now() - 2 * HOUR_MS  # what the listing said, read before the claim
    assert (await blobs.hold(blob.hex)) is not None
    sweep = BlobSweep(blobs, assets)
    count = SweepCount()
    await sweep._sweep_batch([(blob.hex, stale_mtime)], count)
    assert count.restored == 1 and count.removed == 0
    assert blob.path.read_bytes() == b"wanted"
    await _asset(assets, blob)  # the record arrives and finds its bytes


async def test_a_blob_given_an_asset_while_aside_is_put_back_and_a_claim_after_the_move_finds_none(
        blobs: BlobStore, assets: AssetStore) -> None:
    blob, other = await _blob(blobs, b"mine"), await _blob(blobs, b"other")
    old = time.time() - 2 * BLOB_GRACE_MS / 1000
    for path in (blob.path, other.path):
        os.utime(path, (old, old))
    aside = await blobs.condemn([blob.hex, other.hex])  # as a sweep that stopped half-way left them
    assert sorted(hex_digest for hex_digest, _ in aside) == sorted([blob.hex, other.hex])
    assert await blobs.hold(blob.hex) is None  # from-hash answers 404, a delivery fails as for a deleted asset
    await _asset(assets, blob)  # an asset whose record was made while its blob was aside
    count = await BlobSweep(blobs, assets).sweep()  # the next sweep judges them again, Redis read anew
    assert count == SweepCount(removed=1, restored=1, freed_bytes=len(b"other"))
    assert blob.path.read_bytes() == b"mine" and not other.path.exists()


async def test_redis_away_while_blobs_are_aside_puts_them_all_back(blobs: BlobStore) -> None:
    blob = await _blob(blobs, b"bytes")
    await blobs.condemn([blob.hex])
    dead = aioredis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    try:
        with pytest.raises(TransientError):
            await BlobSweep(blobs, AssetStore(dead, Keys("test"))).sweep()
    finally:
        await dead.aclose()
    assert blob.path.read_bytes() == b"bytes" and not list(blobs.condemned_dir.iterdir())


async def test_the_daemon_sweeps_upload_leftovers_at_start_up(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path, redis_url)
    tmp_dir = settings.data_dir / "assets" / "tmp"
    tmp_dir.mkdir(parents=True)
    leftover = tmp_dir / ".upload-crashed"
    leftover.write_bytes(b"half an upload")
    two_hours_ago = time.time() - 7200
    os.utime(leftover, (two_hours_ago, two_hours_ago))
    async with running_daemon(settings):
        for _ in range(100):
            if not leftover.exists():
                break
            await asyncio.sleep(0.05)
    assert not leftover.exists()


async def test_an_upload_of_bytes_already_stored_claims_their_blob(blobs: BlobStore, assets: AssetStore) -> None:
    """Deduplicated, the upload installs nothing: it still claims the blob, so a sweep that found no asset of it
    leaves it for the asset record the upload makes next."""
    blob = await _blob(blobs, b"twice")
    old = time.time() - 2 * BLOB_GRACE_MS / 1000
    os.utime(blob.path, (old, old))
    again = await _blob(blobs, b"twice")
    assert not again.created_new
    assert await BlobSweep(blobs, assets).sweep() == SweepCount()
    assert blob.path.read_bytes() == b"twice"
