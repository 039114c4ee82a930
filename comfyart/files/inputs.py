"""Uploaded input images, stored by content under the data directory until a task delivers them to a backend.

An input's id is its SHA-256 plus its extension, so the same picture uploaded twice is stored once and reaches a
backend under one name.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import re
import tempfile
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:
    from comfyart.files.cache import RemoteFiles

INPUT_ID = re.compile(r"^[0-9a-f]{64}\.(png|jpg|webp|gif|bmp|tiff)$")
MAX_UPLOAD_BYTES = 64 << 20
MAX_REMEMBERED = 10_000  # input ids another replica holds, remembered for the synchronous graph checks
IMAGE_KINDS = "PNG, JPEG, WEBP, GIF, BMP or TIFF"

_WEBP = ("image/webp", ".webp")  # RIFF....WEBP: a signature with a gap, checked on its own
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "image/png", ".png"),
    (b"\xff\xd8\xff", "image/jpeg", ".jpg"),
    (b"GIF87a", "image/gif", ".gif"),
    (b"GIF89a", "image/gif", ".gif"),
    (b"BM", "image/bmp", ".bmp"),
    (b"II*\x00", "image/tiff", ".tiff"),
    (b"MM\x00*", "image/tiff", ".tiff"),
)


def sniff_image(head: bytes) -> tuple[str, str] | None:
    """(content type, extension) of an image from its first bytes, or None: the bytes decide, never the name or
    the client's declared content type."""
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return _WEBP
    for signature, content_type, extension in _SIGNATURES:
        if head.startswith(signature):
            return content_type, extension
    return None


CONTENT_TYPES = {extension: content_type for _, content_type, extension in _SIGNATURES}
CONTENT_TYPES[_WEBP[1]] = _WEBP[0]


class NotAnImage(ValueError):
    pass


def _image_kind(head: bytes) -> tuple[str, str]:
    kind = sniff_image(head)
    if kind is None:
        raise NotAnImage(f"not an image ({IMAGE_KINDS})")
    return kind


class TooLarge(ValueError):
    pass


@dataclass(frozen=True)
class StoredInput:
    id: str
    size: int
    content_type: str


def named_input_ids(graph: Any) -> set[str]:
    """The input ids a graph's node inputs name (a value's last path component, as ``/upload/image`` answers
    it with a subfolder)."""
    names = set()
    for node in graph.values() if isinstance(graph, dict) else ():
        inputs = node.get("inputs") if isinstance(node, dict) else None
        for value in inputs.values() if isinstance(inputs, dict) else ():
            if isinstance(value, str) and INPUT_ID.match(name := value.rsplit("/", 1)[-1]):
                names.add(name)
    return names


class InputStore:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.remote: RemoteFiles | None = None  # the other replicas' inputs (None: one process, this disk only)
        self.elsewhere: set[str] = set()  # ids ``known`` found on another replica (an upload is never undone)

    def path(self, input_id: str) -> Path | None:
        """The file of a stored input, or None (also for anything that is not an input id)."""
        if not INPUT_ID.match(input_id):
            return None
        path = self.root / input_id[:2] / input_id
        return path if path.is_file() else None

    async def locate(self, input_id: str) -> Path | None:
        """The file of a stored input: on this disk, else a copy of another replica's (``remote``), else None.
        FileUnreachable when the replica that holds it does not answer."""
        path = self.path(input_id)
        if path is not None or self.remote is None or not INPUT_ID.match(input_id):
            return path
        return await self.remote.fetch("inputs", input_id)

    async def known(self, names: Iterable[str]) -> set[str]:
        """Those of ``names`` that are stored inputs, here or on another replica."""
        ids = {name for name in names if INPUT_ID.match(name)}
        here = {name for name in ids if self.path(name) is not None}
        if self.remote is None or not ids - here:
            return here
        return here | await self.remote.known("inputs", ids - here)

    def is_stored(self, input_id: str) -> bool:
        """Whether ``input_id`` is a stored input: here, or on another replica as a ``learn`` found (the graph
        checks are synchronous: they call ``learn`` first)."""
        return input_id in self.elsewhere or self.path(input_id) is not None

    async def learn(self, graph: Any) -> None:
        """Look up, on the other replicas, the input ids a graph names that are not here (``is_stored`` then
        knows them). One process: nothing to do."""
        if self.remote is None:
            return
        found = await self.known(named_input_ids(graph) - self.elsewhere)
        if len(self.elsewhere) + len(found) > MAX_REMEMBERED:
            self.elsewhere.clear()
        self.elsewhere |= {name for name in found if self.path(name) is None}

    def listing(self) -> list[str]:
        """The ids of the stored inputs, newest first. It reads the directory: call it off the event loop."""
        found = []
        for path in self.root.glob("??/*"):
            try:
                if INPUT_ID.match(path.name) and path.is_file():
                    found.append((path.stat().st_mtime, path.name))
            except OSError:  # removed while listed
                continue
        return [name for _, name in sorted(found, reverse=True)]

    @staticmethod
    def content_type(input_id: str) -> str:
        return CONTENT_TYPES["." + input_id.rsplit(".", 1)[-1]]

    async def add(self, chunks: AsyncIterator[bytes], *, limit: int = MAX_UPLOAD_BYTES) -> StoredInput:
        """Store an upload read chunk by chunk; NotAnImage or TooLarge leave nothing behind."""
        digest = hashlib.sha256()
        size = 0
        kind: tuple[str, str] | None = None
        head = b""
        fd, partial = tempfile.mkstemp(dir=self.root, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as out:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > limit:
                        raise TooLarge(f"larger than {limit} bytes")
                    if kind is None and len(head) < 16:
                        head += chunk[:16]
                        if len(head) >= 16:
                            kind = _image_kind(head)
                    digest.update(chunk)
                    await asyncio.to_thread(out.write, chunk)
            if kind is None:
                kind = _image_kind(head)
            content_type, extension = kind
            input_id = digest.hexdigest() + extension
            target = self.root / input_id[:2] / input_id
            target.parent.mkdir(exist_ok=True)
            os.replace(partial, target)
        finally:
            if os.path.exists(partial):
                os.unlink(partial)
        if self.remote is not None:  # the other replicas learn that this one holds it
            await self.remote.stored("inputs", input_id)
        return StoredInput(input_id, size, content_type)


def open_sized(path: Path) -> tuple[BinaryIO, int]:
    """An input file opened for a delivery, and its size (of the file opened, not of whatever the path names
    next)."""
    file = path.open("rb")
    return file, os.fstat(file.fileno()).st_size
