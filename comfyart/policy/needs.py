"""What a task's graph asks of a backend: the model files it loads, and a rough estimate of its GPU work."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# loader inputs that name model files: checkpoints, LoRAs, VAEs, UNets, text encoders, control nets, upscalers
_MODEL_INPUTS = frozenset({"ckpt_name", "lora_name", "vae_name", "unet_name", "clip_name", "clip_name1",
                           "clip_name2", "clip_name3", "clip_name4", "control_net_name", "model_name",
                           "style_model_name", "gligen_name", "hypernetwork_name", "upscale_model"})
MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".sft", ".onnx")
# choices a loader offers that name no file of its folder: VAELoader's "no VAE" and the tiny autoencoders it puts
# together from vae_approx (nodes.py ``VAELoader.vae_list``)
BUILT_IN_CHOICES = frozenset({"pixel_space", "taesd", "taesdxl", "taesd3", "taef1"})


def names_model(key: str, value: str) -> bool:
    """Whether input ``key`` set to ``value`` names a model file: a loader input, or any ``*_name`` input whose
    value is a model file (custom loaders follow that convention)."""
    if not value or value in BUILT_IN_CHOICES:
        return False
    return key in _MODEL_INPUTS or (key.endswith("_name") and value.lower().endswith(MODEL_SUFFIXES))


def graph_models(graph: Mapping[str, Any]) -> frozenset[str]:
    """The model files a graph loads: the literal values of its inputs that name one."""
    models = set()
    for node in graph.values():
        inputs = node.get("inputs") if isinstance(node, dict) else None
        if not isinstance(inputs, dict):
            continue
        for key, value in inputs.items():
            if isinstance(value, str) and names_model(key, value):
                models.add(value)
    return frozenset(models)


REFERENCE_PIXELS = 512 * 512
_LATENT_SIZE_INPUTS = ("width", "height")


def graph_cost(graph: Mapping[str, Any]) -> float:
    """A rough estimate of a graph's GPU work: the sampling steps of every node with a ``steps`` input, times the
    largest latent's size in 512×512 images (batch and frame count included). Only the ratio between graphs
    matters; a graph with no sampler costs 0."""
    steps = 0
    images = 1.0
    for node in graph.values():
        inputs = node.get("inputs") if isinstance(node, dict) else None
        if not isinstance(inputs, dict):
            continue
        value = inputs.get("steps")
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            steps += value
        width, height = inputs.get("width"), inputs.get("height")
        if isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0:
            count = 1
            for key in ("batch_size", "length"):  # images in a batch, frames of a video latent
                extra = inputs.get(key)
                if isinstance(extra, int) and not isinstance(extra, bool) and extra > 1:
                    count *= extra
            images = max(images, width * height * count / REFERENCE_PIXELS)
    return steps * images


Setting = tuple[str, str, str]  # (node class, input name, value) of a combo input


@dataclass(frozen=True)
class Needs:
    """What a task asks of a backend."""

    tags: frozenset[str] = frozenset()
    vram: int | None = None  # bytes
    models: frozenset[str] = frozenset()  # model files it loads: what affinity matches
    nodes: frozenset[str] = frozenset()  # node classes of its graph
    values: frozenset[Setting] = frozenset()  # of each combo input it sets

    @property
    def of_inventory(self) -> bool:
        """Whether it asks anything of a backend's node classes and models."""
        return bool(self.nodes or self.values)


def needs_record(needs: Needs, cost: float) -> dict[str, Any]:
    """``needs`` and a graph's cost as a task's record keeps them (JSON; empty parts left out), worked out once
    at submission so that dispatch reads them rather than resolving the graph again."""
    record: dict[str, Any] = {"nodes": sorted(needs.nodes), "values": sorted([list(v) for v in needs.values]),
                              "models": sorted(needs.models), "tags": sorted(needs.tags)}
    record = {k: v for k, v in record.items() if v}
    if needs.vram is not None:
        record["vram_mb"] = needs.vram >> 20
    if cost:
        record["cost"] = cost
    return record


def needs_of_record(record: Mapping[str, Any]) -> tuple[Needs, float]:
    """What ``needs_record`` wrote, back (a record this version does not understand asks nothing)."""
    try:
        vram_mb = record.get("vram_mb")
        needs = Needs(frozenset(record.get("tags", ())), None if vram_mb is None else int(vram_mb) << 20,
                      frozenset(record.get("models", ())), frozenset(record.get("nodes", ())),
                      frozenset((str(c), str(i), str(v)) for c, i, v in record.get("values", ())))
        return needs, float(record.get("cost", 0.0))
    except (TypeError, ValueError):
        return Needs(), 0.0
