"""The userdata scripts (store.userdata) on a real redis-server: a random run of writes, moves and deletes decides as
a filesystem would, and leaves the bytes used and the directories exactly what the files make."""
from __future__ import annotations

import random

import pytest

from comfyart.store.keys import Keys
from comfyart.store.userdata import ABSENT, ANY, Expect, UserData, UserDataRefused

NAMES = ["a.json", "b", "w/a.json", "w/b.json", "w/s/c.json", "x/y/z", "a.json/q", "w", "w/s"]


def _blocked(files: dict[str, bytes], path: str) -> str | None:
    """What a filesystem says to a file at ``path``: a directory is there, or a file is where a directory must be."""
    if any(other.startswith(path + "/") for other in files):
        return "directory"
    parts = path.split("/")
    if any("/".join(parts[:i]) in files for i in range(1, len(parts))):
        return "parent_is_file"
    return None


def _dirs(files: dict[str, bytes]) -> dict[str, str]:
    counts: dict[str, int] = {}
    for path in files:
        parts = path.split("/")
        for i in range(1, len(parts)):
            counts["/".join(parts[:i])] = counts.get("/".join(parts[:i]), 0) + 1
    return {d: str(n) for d, n in counts.items()}


async def _step(userdata: UserData, model: dict[str, bytes], rng: random.Random, now: int) -> str | None:
    """One random change, made and modelled; the reason it was refused, if it was."""
    path, other = rng.choice(NAMES), rng.choice(NAMES)
    action = rng.choice(["write", "write", "create", "move", "move_new", "delete"])
    blocked = None
    if action in ("write", "create"):
        blocked = _blocked(model, path)
    elif action.startswith("move") and path in model and path != other:
        blocked = _blocked(model, other)  # the source is still there: a file cannot move below or over itself
    try:
        if action in ("write", "create"):
            content = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 900)))
            await userdata.write("o", path, content, now_ms=now, expect=ANY if action == "write" else ABSENT)
            model[path] = content
        elif action.startswith("move"):
            await userdata.move("o", path, other, overwrite=action == "move")
            model[other] = model.pop(path)
        else:
            assert await userdata.delete("o", path) == (path in model)
            model.pop(path, None)
    except UserDataRefused as refused:
        if blocked is not None or refused.reason in ("directory", "parent_is_file"):
            assert refused.reason == blocked, (action, path, other)
        return refused.reason
    assert blocked is None, (action, path, other)
    return None


async def test_a_random_run_keeps_files_bytes_and_directories_consistent(redis_client):
    keys = Keys("ud")
    userdata = UserData(redis_client, keys, max_bytes=3_000, max_file_bytes=800)
    rng, model = random.Random(7), {}
    reasons: set[str] = set()
    for step in range(600):
        before = dict(model)
        reason = await _step(userdata, model, rng, now=1_000 + step)
        if reason is not None:
            reasons.add(reason)
            assert model == before, step  # a refusal changes nothing
        for path in model:
            assert await userdata.read("o", path) == model[path], (step, path)
        assert {f.path: f.size for f in await userdata.files("o")} == {p: len(c) for p, c in model.items()}
        assert await userdata.used("o") == sum(len(c) for c in model.values()) <= 3_000
        assert await redis_client.hgetall(keys.userdata("o")[2]) == _dirs(model), step
        assert all(_blocked(model, p) is None for p in model)
    assert reasons >= {"exists", "full", "file_too_large", "directory", "parent_is_file", "missing"}


async def test_times_sizes_and_expected_contents(redis_client):
    userdata = UserData(redis_client, Keys("ud"), max_bytes=10_000, max_file_bytes=1_000)
    first = await userdata.write(None, "s.json", b"\xff\x00{}", now_ms=100)
    assert (first.size, first.created_ms, first.modified_ms) == (4, 100, 100)
    assert await userdata.read(None, "s.json") == b"\xff\x00{}"  # bytes as they came, not text
    with pytest.raises(UserDataRefused, match="changed"):
        await userdata.write(None, "s.json", b"2", now_ms=200, expect=Expect.content(b"other"))
    with pytest.raises(UserDataRefused, match="changed"):
        await userdata.write(None, "s.json", b"2", now_ms=200, expect=Expect.content(None))
    second = await userdata.write(None, "s.json", b"22", now_ms=200, expect=Expect.content(b"\xff\x00{}"))
    assert (second.size, second.created_ms, second.modified_ms) == (2, 100, 200)
    assert (await userdata.write(None, "new", b"", now_ms=300, expect=Expect.content(None))).size == 0
    moved = await userdata.move(None, "s.json", "d/t.json", overwrite=False)
    assert (moved.path, moved.created_ms, moved.modified_ms) == ("d/t.json", 100, 200)
    assert await userdata.files("someone") == []  # another owner's space is empty
