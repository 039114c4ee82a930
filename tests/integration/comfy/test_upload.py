"""Delivering an input file to a backend (comfy.client.upload_image, as the dispatcher does): streamed from the
file, a chunk at a time off the event loop, with the form ComfyUI's /upload/image reads; the emulator receives
every byte. Memory while ~100 MB go: measured both ways, bytes held whole (as before) and streamed."""
from __future__ import annotations

import asyncio
import hashlib
import os
import tracemalloc
from pathlib import Path

import aiohttp
import pytest

from comfyart.comfy.client import ComfyClient
from comfyart.errors import BackendUnavailable

SIZE = 100_000_000  # the emulator takes bodies up to 100 MiB, as ComfyUI 0.3.64 does
NAME = "ab" * 32 + ".bin"


def _write_random(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for _ in range(size // (1 << 20)):
            chunk = os.urandom(1 << 20)
            digest.update(chunk)
            out.write(chunk)
        tail = os.urandom(size % (1 << 20))
        digest.update(tail)
        out.write(tail)
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


async def test_a_100_mb_input_streams_to_the_backend_intact_in_little_memory(tmp_path: Path, emulator,
                                                                              session: aiohttp.ClientSession) -> None:
    emu = emulator()
    source = tmp_path / "input.bin"
    expected = await asyncio.to_thread(_write_random, source, SIZE)
    client = ComfyClient(session, emu.url)
    received = emu.base_dir / "input" / NAME

    tracemalloc.start()
    try:
        file = await asyncio.to_thread(source.open, "rb")
        try:
            stored = await client.upload_image(file, size=SIZE, name=NAME, content_type="application/octet-stream",
                                               timeout_s=120)
        finally:
            file.close()
        streamed_peak = tracemalloc.get_traced_memory()[1]
        assert stored == NAME
        assert await asyncio.to_thread(_sha256, received) == expected
        received.unlink()

        tracemalloc.reset_peak()
        data = await asyncio.to_thread(source.read_bytes)  # the old delivery: the file whole in memory
        stored = await client.upload_image(data, name=NAME, content_type="application/octet-stream", timeout_s=120)
        del data
        whole_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert stored == NAME
    assert await asyncio.to_thread(_sha256, received) == expected
    print(f"\npeak traced memory delivering {SIZE} bytes: streamed {streamed_peak / 2**20:.1f} MiB, "
          f"whole {whole_peak / 2**20:.1f} MiB")
    assert streamed_peak < 8 * 2**20 < SIZE <= whole_peak


async def test_a_file_shorter_than_its_size_fails_the_delivery(tmp_path: Path, emulator,
                                                               session: aiohttp.ClientSession) -> None:
    emu = emulator()
    source = tmp_path / "short.bin"
    source.write_bytes(b"12345")
    client = ComfyClient(session, emu.url)
    with source.open("rb") as file, pytest.raises(BackendUnavailable):
        await client.upload_image(file, size=10, name=NAME, content_type="image/png", timeout_s=10)
    assert not (emu.base_dir / "input" / NAME).exists()
