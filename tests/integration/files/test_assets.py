"""The v2 assets' blobs on a real disk (files.assets): streamed without holding the body, named by BLAKE3,
deduplicated (even when two uploads of the same bytes race), and nothing left behind by a refused or cancelled
upload."""
from __future__ import annotations

import asyncio
import hashlib
import os
import tracemalloc
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest
from blake3 import blake3

from comfyart.files.assets import BlobStore, HashMismatch, PayloadTooLarge
from comfyart.policy.assets import BadAssetHash

CHUNK = 64 * 1024


async def _stream(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        await asyncio.sleep(0)  # a body arrives over time: other uploads run between its chunks
        yield chunk


@pytest.fixture
async def blobs(tmp_path: Path) -> AsyncIterator[BlobStore]:
    store = BlobStore(tmp_path / "assets")
    yield store
    await store.aclose()


def _leftovers(store: BlobStore) -> list[str]:
    return sorted(p.name for p in store.tmp_dir.iterdir()) if store.tmp_dir.exists() else []


async def test_a_blob_is_named_by_its_blake3_and_stored_once(blobs: BlobStore) -> None:
    body = os.urandom(300_000)
    first = await blobs.write_stream(_stream([body[:1000], body[1000:]]), max_bytes=len(body))
    hex_digest = blake3(body).hexdigest()
    assert (first.hash, first.sha256, first.size) == ("blake3:" + hex_digest, hashlib.sha256(body).hexdigest(),
                                                      len(body))
    assert first.created_new
    assert first.path == blobs.blobs_dir / hex_digest[:2] / hex_digest
    assert first.path.read_bytes() == body
    again = await blobs.write_stream(_stream([body]), max_bytes=len(body), expected_hash=first.hash)
    assert (again.hash, again.path, again.created_new) == (first.hash, first.path, False)
    assert _leftovers(blobs) == []
    found = await blobs.find(hex_digest)
    assert found is not None and found.size == len(body)
    assert await blobs.find("f" * 64) is None


async def test_a_hundred_megabytes_stream_in_flat_memory(blobs: BlobStore) -> None:
    chunks = [os.urandom(CHUNK) for _ in range(16)]  # 1 MiB of distinct chunks, sent 100 times over
    digest = blake3()
    total = 0
    tracemalloc.start()
    try:
        async def body() -> AsyncIterator[bytes]:
            nonlocal total
            for i in range(100 * 16):
                chunk = chunks[i % 16]
                digest.update(chunk)
                total += len(chunk)
                yield chunk
        blob = await blobs.write_stream(body(), max_bytes=100 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == 100 << 20
    assert blob.size == total and blob.hash == "blake3:" + digest.hexdigest()
    assert blob.path.stat().st_size == total
    assert peak < 4 << 20, f"peak {peak} bytes traced while streaming 100 MiB"


async def test_uploads_of_the_same_bytes_at_once_end_with_one_blob(blobs: BlobStore) -> None:
    """Two stores of one directory (two daemons sharing data_dir: two file threads) racing two uploads each."""
    other = BlobStore(blobs.root)
    body = [os.urandom(CHUNK) for _ in range(20)]
    try:
        results = await asyncio.gather(*(store.write_stream(_stream(body), max_bytes=len(body) * CHUNK)
                                         for store in (blobs, other, blobs, other)))
    finally:
        await other.aclose()
    assert len({r.hash for r in results}) == 1
    assert sorted(r.created_new for r in results) == [False, False, False, True]
    stored = [p for p in blobs.blobs_dir.rglob("*") if p.is_file()]
    assert stored == [results[0].path]
    assert stored[0].read_bytes() == b"".join(body)
    assert _leftovers(blobs) == []


async def test_a_mismatched_expected_hash_keeps_nothing(blobs: BlobStore) -> None:
    expected = "blake3:" + blake3(b"what the client meant").hexdigest()
    with pytest.raises(HashMismatch) as refused:
        await blobs.write_stream(_stream([b"what ", b"arrived"]), max_bytes=100, expected_hash=expected)
    assert refused.value.code == "hash_mismatch"
    assert refused.value.actual == "blake3:" + blake3(b"what arrived").hexdigest()
    assert str(refused.value) == f"expected_hash is {expected} but the bytes received hash to {refused.value.actual}"
    assert _leftovers(blobs) == []
    assert not blobs.blobs_dir.exists() or not any(blobs.blobs_dir.rglob("*"))


async def test_a_malformed_expected_hash_is_refused_before_the_body_is_read(blobs: BlobStore) -> None:
    read = []

    async def body() -> AsyncIterator[bytes]:
        read.append(1)
        yield b"x"
    with pytest.raises(BadAssetHash):
        await blobs.write_stream(body(), max_bytes=100, expected_hash="sha256:00")
    assert read == []


async def test_an_upload_past_the_cap_stops_there_and_keeps_nothing(blobs: BlobStore) -> None:
    sent = []

    async def body() -> AsyncIterator[bytes]:
        for i in range(100):
            sent.append(i)
            yield b"x" * 1000
    with pytest.raises(PayloadTooLarge) as refused:
        await blobs.write_stream(body(), max_bytes=5000)
    assert (refused.value.code, str(refused.value)) == ("payload_too_large", "upload larger than 5000 bytes")
    assert len(sent) == 6  # the chunk that crossed the cap is the last one read
    assert _leftovers(blobs) == []
    exact = await blobs.write_stream(_stream([b"x" * 1000] * 5), max_bytes=5000)
    assert exact.size == 5000


async def test_a_cancelled_upload_leaves_no_temp_file(blobs: BlobStore) -> None:
    started = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b"first"
        started.set()
        await asyncio.Event().wait()  # the client stalls; the request is cancelled
        yield b"never"
    upload = asyncio.create_task(blobs.write_stream(body(), max_bytes=100), name="upload")
    await started.wait()
    await asyncio.sleep(0.05)
    assert len(_leftovers(blobs)) == 1
    upload.cancel()
    with pytest.raises(asyncio.CancelledError):
        await upload
    assert _leftovers(blobs) == []
