"""What a backend can run: its node classes and the choices of its combo inputs (checkpoints, LoRAs, VAEs, any
custom node's file list), as its ``/object_info`` lists them; and whether that covers what a task needs.

Backends that answer the same document (containers of one image, with one models volume) share one ``Inventory``,
so the answer to "can it run this?" is worked out once per inventory and distinct needs, not per backend.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from comfyart.policy.needs import Needs, names_model

Combo = tuple[str, str]  # (node class, input name)
MAX_VERDICTS = 4096  # distinct needs remembered per inventory; past that the memory starts again
SHOWN_MISSING = 3  # missing things a reason names before "and N more"


@dataclass(eq=False)
class Inventory:
    """One backend's node classes and combo choices. ``digest`` identifies the document it was read from."""

    digest: str
    nodes: frozenset[str]
    choices: Mapping[Combo, frozenset[str]]
    embeddings: frozenset[str] = frozenset()
    listed: bool = True  # False: the backend lists nothing (no /object_info); it checks each prompt itself
    outputs: frozenset[str] = frozenset()  # its output node classes (SaveImage, PreviewImage, ...)
    _verdicts: dict[Needs, tuple[str, ...]] = field(default_factory=dict, repr=False)

    def missing(self, needs: Needs) -> tuple[str, ...]:
        """What of ``needs`` this inventory lacks, in words (``node SaveVideo``, ``ckpt_name 'x.safetensors'``),
        sorted; () when it covers them. An input that is not a combo here takes any value."""
        verdict = self._verdicts.get(needs)
        if verdict is None and not self.listed:
            return ()
        if verdict is None:
            if len(self._verdicts) >= MAX_VERDICTS:
                self._verdicts.clear()
            verdict = self._verdicts[needs] = self._missing(needs)
        return verdict

    def _missing(self, needs: Needs) -> tuple[str, ...]:
        lacking = {f"node {node}" for node in needs.nodes if node not in self.nodes}
        for node, name, value in needs.values:
            choices = self.choices.get((node, name))
            if node in self.nodes and choices is not None and value not in choices:
                lacking.add(f"{name} '{value}'")
        return tuple(sorted(lacking))

    def output_nodes(self, graph: Mapping[str, Any]) -> frozenset[str] | None:
        """The ids of ``graph``'s output nodes on this backend; None when it lists nothing."""
        if not self.listed:
            return None
        return frozenset(node_id for node_id, node in graph.items()
                         if isinstance(node, dict) and node.get("class_type") in self.outputs)

    def covers(self, needs: Needs) -> bool:
        return not self.missing(needs)

    def models(self) -> frozenset[str]:
        """Every choice of every combo input that names a model file."""
        return frozenset(value for (_, name), values in self.choices.items() for value in values
                         if names_model(name, value))


def listed(missing: Iterable[str]) -> str:
    """``node X, ckpt_name 'y' and 2 more``."""
    items = list(missing)
    shown = ", ".join(items[:SHOWN_MISSING])
    if len(items) > SHOWN_MISSING:
        shown += f" and {len(items) - SHOWN_MISSING} more"
    return shown


def lacking_reason(missing: Iterable[str]) -> str:
    return f"lacks {listed(missing)}"


UNLISTED = Inventory("unlisted", frozenset(), {}, listed=False)


@dataclass(frozen=True)
class Fleet:
    """The fleet's inventories at one moment, as a submission is checked against them: the merged
    ``/object_info``, its combo inputs, and each distinct inventory of the pool's backends, whatever their state
    (a task only a backend that is down could run waits for it)."""

    object_info: Mapping[str, Any]
    combos: frozenset[Combo]
    inventories: tuple[Inventory, ...]

    def refusal(self, needs: Needs) -> str | None:
        """Why no backend of the fleet could run a task with ``needs``, or None when one could."""
        lacking = Counter(inv.missing(needs) for inv in self.inventories if inv.listed)
        if not lacking or () in lacking:
            return None
        if len(lacking) == 1:
            return f"no backend has {listed(next(iter(lacking)))}"
        return "no backend has all it needs: " + "; ".join(f"{n} backend(s) {lacking_reason(missing)}"
                                                            for missing, n in sorted(lacking.items()))
