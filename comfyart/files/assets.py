"""The v2 API's blobs on disk (API-V2.md §6.6): the bytes of assets, stored once per content under
``data_dir/assets``, named by their BLAKE3 digest.

    assets/tmp/             uploads being written (``.upload-*``): a crash leaves them, nothing reads them; the
                            GC removes those untouched for an hour
    assets/blobs/ab/ab…     a blob, ``blobs/<hex[:2]>/<hex>`` (``policy.assets.blob_relpath``); never rewritten;
                            its mtime says when it was last written or claimed (``hold``), which the GC reads
    assets/condemned/ab…    a blob the GC (``sweeps.blobs``) moved aside: removed, or put back when an asset
                            of it appeared meanwhile

An upload streams to a temp file while it is hashed (BLAKE3, and SHA-256 for whoever needs a familiar digest),
never held whole in memory; then it is linked under its digest, unless that blob is there already (dedup: the temp
file is dropped). Linking, not renaming, makes the "already there" test and the install one atomic step, so two
uploads of the same bytes at once end with one blob and both succeed. Every file operation runs in the store's
own FileThread, off the event loop; so does the hashing, which costs more CPU than the writing.

Which owner may read which blob is the store's business (``store.assets``): a blob here has no owner.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from blake3 import blake3

from comfyart.errors import Conflict, InvalidInput
from comfyart.files.filethread import FileThread
from comfyart.policy.assets import blob_hex, blob_name, blob_relpath, is_blob_digest

if TYPE_CHECKING:
    from comfyart.files.cache import RemoteFiles


class PayloadTooLarge(InvalidInput):
    """An upload past its size cap (413 ``payload_too_large``); nothing of it is kept."""

    code = "payload_too_large"

    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"upload larger than {max_bytes} bytes")
        self.max_bytes = max_bytes


class HashMismatch(Conflict):
    """An upload whose bytes are not the ``expected_hash`` the client named (409 ``hash_mismatch``); nothing of
    it is kept."""

    code = "hash_mismatch"

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(f"expected_hash is {expected} but the bytes received hash to {actual}")
        self.expected = expected
        self.actual = actual


@dataclass(frozen=True)
class Blob:
    """A stored blob: ``hash`` is ``blake3:<hex>``; ``created_new`` says this write installed it (False: the
    same bytes were there already)."""

    hash: str
    sha256: str
    size: int
    path: Path
    created_new: bool

    @property
    def hex(self) -> str:
        return self.hash.removeprefix("blake3:")


class _Sink:
    """One upload being written: its temp file and its digests. Touched only in the file thread."""

    def __init__(self, tmp_dir: Path) -> None:
        fd, name = tempfile.mkstemp(dir=tmp_dir, prefix=".upload-")
        self.path = Path(name)
        self.out = os.fdopen(fd, "wb")
        self.blake3 = blake3()
        self.sha256 = hashlib.sha256()
        self.discarded = False

    def write(self, chunk: bytes) -> None:
        self.blake3.update(chunk)
        self.sha256.update(chunk)
        self.out.write(chunk)

    def finish(self) -> None:
        """Flush and sync: a blob is only linked once its bytes are on disk, so a crash never leaves a blob that
        is shorter than its name says."""
        self.out.flush()
        os.fsync(self.out.fileno())
        self.out.close()

    def install(self, target: Path) -> bool:
        """Link the file as ``target`` unless a blob is there already, then drop the temp name. True: installed;
        False: the same bytes were there (dedup)."""
        target.parent.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                os.link(self.path, target)
                installed = True
            except FileExistsError:
                if not _claim(target):  # the GC took it away between the two calls: install ours after all
                    continue
                installed = False
            except OSError:  # a filesystem without hard links: a rename is atomic too, and the bytes are the same
                installed = not target.exists()
                os.replace(self.path, target)
            break
        self.discard()
        return installed

    def discard(self) -> None:
        """Close and remove the temp file; a second call does nothing (its name may be another upload's by then)."""
        self.out.close()
        if not self.discarded:
            self.discarded = True
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


def _make_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


def _claim(path: Path) -> bool:
    """Set a blob's mtime to now, telling the GC it is wanted (``policy.assets.blob_removable``): False when it is
    not there."""
    try:
        os.utime(path)
    except FileNotFoundError:
        return False
    return True


class BlobStore:
    """The blobs below ``root`` (``data_dir/assets``). ``aclose`` ends its file thread."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.tmp_dir = self.root / "tmp"
        self.blobs_dir = self.root / "blobs"
        self.condemned_dir = self.root / "condemned"
        self.files = FileThread("comfyart assets")
        self.remote: RemoteFiles | None = None  # the other replicas' blobs (None: one process, this disk only)

    def blob_path(self, hex_digest: str) -> Path:
        """Where the blob of a digest lies (or would): ValueError for anything that is not a digest."""
        return self.blobs_dir / blob_relpath(hex_digest)

    async def find(self, hex_digest: str) -> Blob | None:
        """The blob of a digest, if stored (its SHA-256 is not known without reading it: empty)."""
        path = self.blob_path(hex_digest)
        try:
            size = (await self.files.run(path.stat)).st_size
        except FileNotFoundError:
            return None
        return Blob(blob_name(hex_digest), "", size, path, created_new=False)

    async def write_stream(self, chunks: AsyncIterator[bytes], *, max_bytes: int,
                           expected_hash: str | Callable[[], str | None] | None = None) -> Blob:
        """Store the bytes of ``chunks`` as a blob. PayloadTooLarge past ``max_bytes``, HashMismatch when they are
        not ``expected_hash`` (``blake3:<hex>``; a malformed one is BadAssetHash before anything is read); either
        way, and when the caller is cancelled, the temp file is gone. A callable ``expected_hash`` is asked once
        the chunks are all read (a multipart form may name it after its file), before the blob is installed."""
        expected_hex = blob_hex(expected_hash) if isinstance(expected_hash, str) else None
        await self.files.run(_make_dir, self.tmp_dir)
        sink = await self.files.run(_Sink, self.tmp_dir)
        try:
            size = 0
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise PayloadTooLarge(max_bytes)
                await self.files.run(sink.write, chunk)
            await self.files.run(sink.finish)
            hex_digest = sink.blake3.hexdigest()
            if callable(expected_hash):
                named = expected_hash()
                expected_hex = blob_hex(named) if named is not None else None
            if expected_hex is not None and expected_hex != hex_digest:
                raise HashMismatch(blob_name(expected_hex), blob_name(hex_digest))
            target = self.blob_path(hex_digest)
            created_new = await self.files.run(sink.install, target)
            if self.remote is not None:  # the other replicas learn that this one holds it
                await self.remote.stored("blobs", hex_digest)
            return Blob(blob_name(hex_digest), sink.sha256.hexdigest(), size, target, created_new)
        finally:
            # after _install this finds nothing to remove; shielded: a cancelled upload still cleans up
            await asyncio.shield(self.files.run(sink.discard))

    async def hold(self, hex_digest: str) -> Path | None:
        """The blob's path, if it is stored, told to the GC as wanted (its mtime: ``policy.assets.blob_removable``)
        in the same file-thread hop: what one calls before an asset record is made of a blob already stored, or
        before its bytes are read for a delivery."""
        path = self.blob_path(hex_digest)
        return path if await self.files.run(_claim, path) else None

    async def locate(self, hex_digest: str) -> Path | None:
        """``hold`` here, else a copy of another replica's blob (``remote``), else None. FileUnreachable when
        the replicas that hold it do not answer."""
        path = await self.hold(hex_digest)
        if path is not None or self.remote is None:
            return path
        return await self.remote.fetch("blobs", hex_digest)

    async def known(self, hex_digest: str) -> bool:
        """Whether the blob is stored here or on another replica (not fetched)."""
        if await self.find(hex_digest) is not None:
            return True
        return self.remote is not None and bool(await self.remote.known("blobs", [hex_digest]))

    # ------------------------------------------------------------------ the GC's file work (sweeps.blobs)
    async def blob_dirs(self) -> list[str]:
        """The blobs' subdirectories (``ab``...), each listed on its own by ``blob_ages``."""
        return await self.files.run(_subdirs, self.blobs_dir)

    async def blob_ages(self, subdir: str) -> list[tuple[str, int]]:
        """(hex digest, mtime in ms) of each blob of one subdirectory."""
        return await self.files.run(_ages, self.blobs_dir / subdir, is_blob_digest)

    async def condemned(self) -> list[tuple[str, int]]:
        """Blobs a GC moved aside and had not settled (it stopped half-way): (hex, mtime ms) each."""
        return await self.files.run(_ages, self.condemned_dir, is_blob_digest)

    async def condemn(self, hex_digests: list[str]) -> list[tuple[str, int]]:
        """Move each blob aside (``condemned/<hex>``, one atomic rename: from then on an upload of the same
        bytes installs them again, and a claim finds nothing), and return (hex, mtime ms) of those moved, read
        after the move: a claim made before it shows."""
        return await self.files.run(_condemn, self, hex_digests)

    async def settle(self, remove: list[str], restore: list[str]) -> int:
        """Unlink the condemned blobs of ``remove``; put those of ``restore`` back (unless an upload of the same
        bytes has meanwhile). Returns the bytes freed."""
        return await self.files.run(_settle, self, remove, restore)

    async def tmp_files(self) -> list[tuple[str, int]]:
        """(name, mtime ms) of each file in ``tmp``."""
        return await self.files.run(_ages, self.tmp_dir, lambda name: True)

    async def remove_tmp(self, names: list[str]) -> int:
        """Unlink files of ``tmp``; returns the bytes freed."""
        return await self.files.run(_unlink_all, [self.tmp_dir / name for name in names])

    async def aclose(self) -> None:
        await self.files.aclose()


# the GC's file work, run in the store's file thread
def _subdirs(path: Path) -> list[str]:
    try:
        return sorted(entry.name for entry in os.scandir(path) if entry.is_dir(follow_symlinks=False))
    except FileNotFoundError:
        return []


def _ages(path: Path, wanted: Callable[[str], bool]) -> list[tuple[str, int]]:
    found = []
    try:
        entries = list(os.scandir(path))
    except FileNotFoundError:
        return []
    for entry in entries:
        if wanted(entry.name) and entry.is_file(follow_symlinks=False):
            with contextlib.suppress(FileNotFoundError):
                found.append((entry.name, entry.stat(follow_symlinks=False).st_mtime_ns // 1_000_000))
    return found


def _condemn(store: BlobStore, hex_digests: list[str]) -> list[tuple[str, int]]:
    store.condemned_dir.mkdir(parents=True, exist_ok=True)
    moved = []
    for hex_digest in hex_digests:
        aside = store.condemned_dir / hex_digest
        try:
            os.rename(store.blob_path(hex_digest), aside)
        except FileNotFoundError:
            continue
        moved.append((hex_digest, aside.stat().st_mtime_ns // 1_000_000))
    return moved


def _settle(store: BlobStore, remove: list[str], restore: list[str]) -> int:
    for hex_digest in restore:
        target = store.blob_path(hex_digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):  # the same bytes were uploaded again meanwhile
            os.link(store.condemned_dir / hex_digest, target)
    _unlink_all([store.condemned_dir / hex_digest for hex_digest in restore])
    return _unlink_all([store.condemned_dir / hex_digest for hex_digest in remove])


def _unlink_all(paths: list[Path]) -> int:
    freed = 0
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            size = path.stat().st_size
            path.unlink()
            freed += size
    return freed
