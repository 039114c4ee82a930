"""Files another replica holds, copied here to be served or delivered (issue 24, "files from any replica"): a
bounded cache under ``data_dir/cache``, one directory per kind (``outputs``, ``inputs``, ``blobs``).

A copy is written to a temp file and renamed into place, so a reader never sees half a file; its mtime is set at
each use, and past ``max_bytes`` the least recently used copies go first (``eviction_order``). A copy is never
stale: inputs and blobs are named by their content, an output never changes once downloaded.

``RemoteFiles`` is what the local stores (``files.inputs``, ``files.assets``, ``files.outputs``) ask when a file
is not on this disk: ``cluster.locator.FileLocator`` in replicated mode; none in one process (as before).
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import re
import tempfile
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from comfyart.errors import TransientError
from comfyart.files.filethread import FileThread
from comfyart.files.inputs import INPUT_ID
from comfyart.policy.assets import is_blob_digest

KINDS = ("outputs", "inputs", "blobs")
TASK_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f/\\]")


class FileUnreachable(TransientError):
    """A stored file whose holder does not answer (503, one line: which file, which replica)."""


class RemoteFiles(Protocol):
    """Files of the other replicas: ``fetch`` a copy (None: no replica holds it), ``stored`` notes one taken
    here, ``known`` answers which of ``names`` some replica holds."""

    async def fetch(self, kind: str, name: str, holder: str | None = None) -> Path | None: ...

    async def stored(self, kind: str, name: str) -> None: ...

    async def known(self, kind: str, names: Collection[str]) -> set[str]: ...


def relpath(kind: str, name: str) -> str | None:
    """Where a file of ``kind`` named ``name`` lies below its kind's directory, or None for a name that is not one
    (the peer route's and the cache's only gate against a path outside them): an input id, a blob's hex digest,
    or an output's ``<task id>/<file name>`` (one harmless component each)."""
    if kind == "inputs":
        return f"{name[:2]}/{name}" if INPUT_ID.match(name) else None
    if kind == "blobs":
        return f"{name[:2]}/{name}" if is_blob_digest(name) else None
    if kind == "outputs":
        task_id, slash, filename = name.partition("/")
        if not slash or not TASK_ID.match(task_id) or filename in ("", ".", "..") or UNSAFE_NAME.search(filename):
            return None
        return f"{task_id}/{filename}"
    return None


@dataclass(frozen=True)
class CachedCopy:
    relpath: str  # below the cache's root: KIND/…
    size: int
    used_ns: int  # mtime: the last write or use


def eviction_order(copies: Sequence[CachedCopy], max_bytes: int, keep: str | None = None) -> list[str]:
    """The copies to remove so the rest fit in ``max_bytes``: the least recently used first, never ``keep`` (the
    one just written: a file larger than the whole cache is still served once)."""
    total = sum(copy.size for copy in copies)
    doomed = []
    for copy in sorted(copies, key=lambda c: (c.used_ns, c.relpath)):
        if total <= max_bytes:
            break
        if copy.relpath == keep:
            continue
        doomed.append(copy.relpath)
        total -= copy.size
    return doomed


class FileCache:
    """Copies below ``root`` (``data_dir/cache``), at most ``max_bytes`` in all. Every file operation runs in the
    cache's own FileThread."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root.resolve()
        self.max_bytes = max_bytes
        self.files = FileThread("comfyart file cache")

    def _path(self, kind: str, name: str) -> Path:
        rel = relpath(kind, name)
        if rel is None:
            raise ValueError(f"not a {kind} file name: {name!r}")
        return self.root / kind / rel

    async def get(self, kind: str, name: str) -> Path | None:
        """The copy, if cached (marked as used), else None; None also for a name that is not one."""
        if relpath(kind, name) is None:
            return None
        path = self._path(kind, name)
        return path if await self.files.run(_touch, path) else None

    async def put(self, kind: str, name: str, chunks: AsyncIterator[bytes]) -> Path:
        """Write a copy from ``chunks`` (temp file, then renamed), then trim the cache to its size."""
        target = self._path(kind, name)
        tmp_dir = self.root / "tmp"
        out = await self.files.run(_open_tmp, tmp_dir)
        installed = False
        try:
            async for chunk in chunks:
                await self.files.run(out.write, chunk)
            await self.files.run(out.close)
            await self.files.run(_install, Path(out.name), target)
            installed = True
        finally:
            if not installed:  # shielded: a cancelled fetch still leaves no temp file
                await asyncio.shield(self.files.run(_discard, out))
        await self.files.run(self._trim, f"{kind}/{relpath(kind, name)}")
        return target

    def _trim(self, keep: str) -> None:
        copies = _listing(self.root)
        for rel in eviction_order(copies, self.max_bytes, keep):
            with contextlib.suppress(FileNotFoundError):
                (self.root / rel).unlink()

    async def aclose(self) -> None:
        await self.files.aclose()


# run in the cache's file thread
def _touch(path: Path) -> bool:
    try:
        os.utime(path)
    except FileNotFoundError:
        return False
    return True


def _open_tmp(tmp_dir: Path) -> tempfile._TemporaryFileWrapper[bytes]:
    tmp_dir.mkdir(parents=True, exist_ok=True)
    return tempfile.NamedTemporaryFile(dir=tmp_dir, prefix=".fetch-", delete=False)  # noqa: SIM115 - closed by put


def _install(tmp: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, target)


def _discard(out: tempfile._TemporaryFileWrapper[bytes]) -> None:
    out.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(out.name)


def _listing(root: Path) -> list[CachedCopy]:
    copies = []
    for kind in KINDS:
        for dirpath, _, filenames in os.walk(root / kind):
            for filename in filenames:
                path = Path(dirpath) / filename
                with contextlib.suppress(FileNotFoundError):
                    stat = path.stat()
                    copies.append(CachedCopy(str(path.relative_to(root)), stat.st_size, stat.st_mtime_ns))
    return copies
