"""The output store: files downloaded from backends, one directory per task under the data directory."""
from __future__ import annotations

import os
from pathlib import Path


class OutputStore:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def task_dir(self, task_id: str) -> Path:
        path = self.root / task_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def destination(self, task_id: str, filename: str, node_id: str) -> Path:
        """Where an output goes: its own base name, prefixed by the node id when another output took it."""
        name = os.path.basename(filename.replace("\\", "/")) or "output"
        if name in (".", ".."):
            name = "output"
        target = self.task_dir(task_id) / name
        if target.exists():
            target = target.with_name(f"{node_id}_{name}")
        return target

    def relative(self, path: Path) -> str:
        """``path`` (one ``destination`` gave) relative to the store."""
        return str(path.relative_to(self.root))

    def find(self, task_id: str, filename: str) -> Path | None:
        """The stored file of a task, or None; never a path outside the store."""
        if "/" in filename or "\\" in filename or filename in ("", ".", ".."):
            return None
        candidate = (self.root / task_id / filename).resolve()
        if candidate.parent != (self.root / task_id).resolve() or not candidate.is_file():
            return None
        return candidate
