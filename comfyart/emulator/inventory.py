"""What one emulated server has: its model files, read from ``<base-dir>/models/<folder>`` on every request as
ComfyUI rescans its model folders (so a test adds a model by creating a file and removes one by deleting it), and
its node classes, less those left out.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping

from comfyart.emulator.catalogue import SPECS, NodeSpec

MODEL_FOLDERS = ["checkpoints", "configs", "loras", "vae", "text_encoders", "diffusion_models", "clip_vision",
                 "style_models", "embeddings", "diffusers", "vae_approx", "controlnet", "gligen", "upscale_models",
                 "custom_nodes", "hypernetworks", "photomaker", "classifiers", "model_patches", "audio_encoders"]
# ComfyUI's folder_paths.supported_pt_extensions: other files in a model folder are not models
MODEL_EXTENSIONS = frozenset({".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"})
_FOLDER_EXTENSIONS: dict[str, frozenset[str]] = {"configs": frozenset({".yaml"}), "custom_nodes": frozenset()}

Signature = tuple[tuple[str, int | None], ...]  # every directory walked, with its mtime (None: absent)


class ModelFolders(Mapping[str, list[str]]):
    """``folders["checkpoints"]``: the model names in that folder, relative paths with ``/``, sorted as ComfyUI
    lists them. A folder's listing is cached until the mtime of one of its directories changes."""

    def __init__(self, root: str) -> None:
        self.root = root
        self._cache: dict[str, tuple[Signature, list[str]]] = {}

    def seed(self, folder: str, names: Iterable[str]) -> None:
        """Create an empty file for each name (an existing one is left as it is)."""
        for name in names:
            path = os.path.join(self.root, folder, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if not os.path.exists(path):
                open(path, "wb").close()

    def __getitem__(self, folder: str) -> list[str]:
        if folder not in MODEL_FOLDERS:
            raise KeyError(folder)
        cached = self._cache.get(folder)
        if cached is not None and _unchanged(cached[0]):
            return list(cached[1])
        signature, names = _scan(os.path.join(self.root, folder),
                                 _FOLDER_EXTENSIONS.get(folder, MODEL_EXTENSIONS))
        self._cache[folder] = (signature, names)
        return list(names)

    def __iter__(self) -> Iterator[str]:
        return iter(MODEL_FOLDERS)

    def __len__(self) -> int:
        return len(MODEL_FOLDERS)


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def _unchanged(signature: Signature) -> bool:
    return all(_mtime(path) == mtime for path, mtime in signature)


def _scan(top: str, extensions: frozenset[str]) -> tuple[Signature, list[str]]:
    """The files under ``top`` with one of ``extensions`` (any file where there are none), as ComfyUI's
    ``recursive_search`` and ``filter_files_extensions`` find them."""
    signature: list[tuple[str, int | None]] = [(top, _mtime(top))]
    names: list[str] = []
    for directory, subdirs, files in os.walk(top, followlinks=True):
        subdirs[:] = [d for d in subdirs if d != ".git"]
        signature.extend((os.path.join(directory, d), _mtime(os.path.join(directory, d))) for d in subdirs)
        relative = os.path.relpath(directory, top)
        for name in files:
            if not extensions or os.path.splitext(name)[1].lower() in extensions:
                names.append(name if relative == "." else f"{relative}/{name}".replace(os.sep, "/"))
    return tuple(signature), sorted(names)


def node_classes(without: Iterable[str]) -> dict[str, NodeSpec]:
    """The catalogue less the classes left out; an unknown class is a ValueError (a typo would leave out nothing)."""
    left_out = set(without)
    unknown = sorted(left_out - set(SPECS))
    if unknown:
        raise ValueError(f"no node class {', '.join(unknown)} to leave out")
    return {name: spec for name, spec in SPECS.items() if name not in left_out}
