"""The file cache of copies from other replicas (issue 24): which names are files at all (the peer route's only
gate against a path outside the stores), the order copies leave in, and copies written whole or not at all."""
from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from comfyart.files.cache import CachedCopy, FileCache, eviction_order, relpath
from comfyart.files.inputs import named_input_ids

INPUT = "ab" + "0" * 62 + ".png"
BLOB = "cd" + "1" * 62


@pytest.mark.parametrize(("kind", "name", "expected"), [
    ("inputs", INPUT, f"ab/{INPUT}"),
    ("blobs", BLOB, f"cd/{BLOB}"),
    ("outputs", "01HTASK/ComfyUI_00001_.png", "01HTASK/ComfyUI_00001_.png"),
    ("outputs", "task-1/a picture é.png", "task-1/a picture é.png"),
])
def test_names_of_files(kind: str, name: str, expected: str) -> None:
    assert relpath(kind, name) == expected


@pytest.mark.parametrize(("kind", "name"), [
    ("inputs", "../" + INPUT), ("inputs", INPUT + "/.."), ("inputs", "ab" + "0" * 62 + ".exe"), ("inputs", ""),
    ("blobs", BLOB[:-1]), ("blobs", "../" + BLOB), ("blobs", BLOB.upper()),
    ("outputs", "../../etc/passwd"), ("outputs", "task/.."), ("outputs", "task/."), ("outputs", "task/"),
    ("outputs", "task/a/b.png"), ("outputs", "task/a\\b.png"), ("outputs", "/task/a.png"), ("outputs", "a.png"),
    ("outputs", "..%2F/a.png"), ("outputs", "task/a\x00.png"), ("outputs", "task/a\n.png"),
    ("config", "comfyart.yaml"), ("tmp", "x"),
])
def test_anything_else_is_no_file(kind: str, name: str) -> None:
    assert relpath(kind, name) is None


def copy(rel: str, size: int, used: int) -> CachedCopy:
    return CachedCopy(rel, size, used)


def test_eviction_takes_the_least_recently_used_first_until_it_fits() -> None:
    copies = [copy("inputs/c", 40, 3), copy("inputs/a", 40, 1), copy("outputs/b", 40, 2)]
    assert eviction_order(copies, 120) == []
    assert eviction_order(copies, 119) == ["inputs/a"]
    assert eviction_order(copies, 80) == ["inputs/a"]
    assert eviction_order(copies, 79) == ["inputs/a", "outputs/b"]
    assert eviction_order(copies, 0) == ["inputs/a", "outputs/b", "inputs/c"]


def test_eviction_keeps_the_copy_just_written_even_when_it_alone_is_too_large() -> None:
    copies = [copy("inputs/old", 10, 1), copy("outputs/new", 500, 9)]
    assert eviction_order(copies, 100, keep="outputs/new") == ["inputs/old"]
    assert eviction_order([copy("a", 5, 2), copy("b", 5, 1)], 5, keep="b") == ["a"]


def test_equal_times_leave_in_name_order() -> None:
    assert eviction_order([copy("b", 1, 5), copy("a", 1, 5)], 1) == ["a"]


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_copies_are_written_whole_and_trimmed_to_the_size(tmp_path: Path) -> None:
    cache = FileCache(tmp_path / "cache", max_bytes=10)
    try:
        first = await cache.put("inputs", INPUT, chunks(b"12345", b"6"))
        assert first.read_bytes() == b"123456" and await cache.get("inputs", INPUT) == first
        os.utime(first, ns=(1, 1))  # long unused
        second = await cache.put("blobs", BLOB, chunks(b"abcdef"))
        assert await cache.get("inputs", INPUT) is None  # 12 bytes > 10: the older one went
        assert await cache.get("blobs", BLOB) == second
        assert await cache.get("outputs", "../x") is None
        assert list((tmp_path / "cache" / "tmp").iterdir()) == []
    finally:
        await cache.aclose()


async def test_a_broken_fetch_leaves_no_copy_and_no_temp_file(tmp_path: Path) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b"half"
        raise ConnectionError("peer went away")

    cache = FileCache(tmp_path / "cache", max_bytes=1 << 20)
    try:
        with pytest.raises(ConnectionError):
            await cache.put("inputs", INPUT, broken())
        assert await cache.get("inputs", INPUT) is None
        assert list((tmp_path / "cache" / "tmp").iterdir()) == []
        with pytest.raises(ValueError, match="not a outputs file name"):
            await cache.put("outputs", "../../etc/passwd", chunks(b"x"))
    finally:
        await cache.aclose()


def test_input_ids_a_graph_names() -> None:
    graph = {"1": {"class_type": "LoadImage", "inputs": {"image": INPUT}},
             "2": {"class_type": "LoadImage", "inputs": {"image": f"sub/{INPUT.replace('ab', 'ef', 1)}"}},
             "3": {"class_type": "X", "inputs": {"text": "hello", "n": 3, "link": ["1", 0]}},
             "4": "not a node"}
    assert named_input_ids(graph) == {INPUT, INPUT.replace("ab", "ef", 1)}
    assert named_input_ids(["not", "a", "graph"]) == set()
