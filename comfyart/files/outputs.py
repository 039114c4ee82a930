"""The output store: files downloaded from backends, one directory per task under the data directory."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from comfyart.files.cache import RemoteFiles

MAX_NAME_BYTES = 200  # file systems allow 255; the node-id prefix of a second file with the name needs room
UNSAFE = re.compile(r"[\x00-\x1f\x7f]")


def safe_filename(name: str) -> str:
    """A backend's file name as one harmless path component: its base name, without control characters,
    at most MAX_NAME_BYTES bytes (its extension kept), never ``.``, ``..`` or empty."""
    name = UNSAFE.sub("_", os.path.basename(name.replace("\\", "/")))
    if name in ("", ".", ".."):
        return "output"
    if len(name.encode()) > MAX_NAME_BYTES:
        stem, dot, suffix = name.rpartition(".")
        suffix = suffix[:16] if dot and stem else ""
        budget = MAX_NAME_BYTES - len(suffix.encode()) - 1
        name = (stem or name).encode()[:budget].decode(errors="ignore") + ("." + suffix if suffix else "")
    return name


class OutputStore:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.remote: RemoteFiles | None = None  # the other replicas' outputs (None: one process, this disk only)
        self.holder: str | None = None  # this replica's name, on each output record, for the others to fetch it

    def task_dir(self, task_id: str) -> Path:
        path = self.root / task_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def destination(self, task_id: str, filename: str, node_id: str) -> Path:
        """Where an output goes: its own base name, prefixed by the node id when another output took it."""
        name = safe_filename(filename)
        target = self.task_dir(task_id) / name
        if target.exists():
            target = target.with_name(safe_filename(f"{node_id}_{name}".replace("/", "_").replace("\\", "_")))
        return target

    def relative(self, path: Path) -> str:
        """``path`` (one ``destination`` gave) relative to the store."""
        return str(path.relative_to(self.root))

    def remove_task(self, task_id: str) -> None:
        """Remove a task's stored outputs (blocking: call it in a thread); none stored is no error."""
        if "/" in task_id or "\\" in task_id or task_id in ("", ".", ".."):
            return
        shutil.rmtree(self.root / task_id, ignore_errors=True)

    def find(self, task_id: str, filename: str) -> Path | None:
        """The stored file of a task, or None; never a path outside the store."""
        if "/" in filename or "\\" in filename or filename in ("", ".", ".."):
            return None
        candidate = (self.root / task_id / filename).resolve()
        if candidate.parent != (self.root / task_id).resolve() or not candidate.is_file():
            return None
        return candidate

    async def locate(self, task_id: str, filename: str, holder: str | None) -> Path | None:
        """The stored file of a task: on this disk, else a copy from ``holder``, the replica that downloaded it
        (``OutputFile.replica``), else None. FileUnreachable when that replica does not answer."""
        path = self.find(task_id, filename)
        if path is not None or self.remote is None or holder is None:
            return path
        return await self.remote.fetch("outputs", f"{task_id}/{filename}", holder)
