"""What the fleet holds, as an admin reads it: the model files of an inventory with the folder each comes from,
what an inventory has that no other of the fleet has, and the fleet's model files with the backends that hold each.

All of it is worked out per distinct inventory, never per backend (a fleet of 1,000 containers of one image holds
one inventory), and ``Holdings`` remembers the answers until the set of inventories changes.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from comfyart.policy.inventory import Inventory
from comfyart.policy.needs import names_model

SHOWN_ONLY = 20  # models or node classes a summary names before counting the rest
EMBEDDINGS = "embeddings"

# The folder ComfyUI reads a loader input's files from (``folder_paths``' names), by input name, and where one
# input name serves several folders, by node class too.
_INPUT_FOLDERS = {"ckpt_name": "checkpoints", "lora_name": "loras", "vae_name": "vae",
                  "unet_name": "diffusion_models", "clip_name": "text_encoders", "clip_name1": "text_encoders",
                  "clip_name2": "text_encoders", "clip_name3": "text_encoders", "clip_name4": "text_encoders",
                  "control_net_name": "controlnet", "style_model_name": "style_models", "gligen_name": "gligen",
                  "hypernetwork_name": "hypernetworks", "config_name": "configs"}
_NODE_FOLDERS = {("CLIPVisionLoader", "clip_name"): "clip_vision",
                 ("UpscaleModelLoader", "model_name"): "upscale_models",
                 ("PhotoMakerLoader", "photomaker_model_name"): "photomaker",
                 ("DiffusersLoader", "model_path"): "diffusers"}


def folder_of(node_class: str, input_name: str) -> str:
    """The folder a combo input's model files come from (``ckpt_name`` → ``checkpoints``); where it cannot be
    told, the input itself as ``NodeClass.input``."""
    return (_NODE_FOLDERS.get((node_class, input_name)) or _INPUT_FOLDERS.get(input_name)
            or f"{node_class}.{input_name}")


def model_kinds(inventory: Inventory) -> dict[str, frozenset[str]]:
    """Every model file of ``inventory`` (each combo choice that names one, and its embeddings) with the folders it
    is a choice of."""
    kinds: dict[str, set[str]] = {}
    for (node_class, input_name), values in inventory.choices.items():
        for value in values:
            if names_model(input_name, value):
                kinds.setdefault(value, set()).add(folder_of(node_class, input_name))
    for name in inventory.embeddings:
        kinds.setdefault(name, set()).add(EMBEDDINGS)
    return {name: frozenset(folders) for name, folders in kinds.items()}


@dataclass(frozen=True)
class Capped:
    """Names, sorted, the first ``SHOWN_ONLY`` of them, and how many more there are."""

    shown: tuple[str, ...] = ()
    more: int = 0

    @classmethod
    def of(cls, names: Iterable[str], shown: int = SHOWN_ONLY) -> Capped:
        ordered = sorted(names)
        return cls(tuple(ordered[:shown]), max(0, len(ordered) - shown))


@dataclass(frozen=True)
class Only:
    """What the backends of one inventory have that no backend of another inventory has."""

    models: Capped = Capped()
    nodes: Capped = Capped()


def exclusive(inventories: Sequence[Inventory], kinds: Mapping[str, Mapping[str, frozenset[str]]],
              shown: int = SHOWN_ONLY) -> dict[str, Only]:
    """For each of the distinct listed ``inventories`` (by digest), the model files and node classes that none of
    the others has; ``kinds``: each digest's ``model_kinds``. One inventory alone has nothing the others lack: the
    fleet is uniform. An unlisted inventory (it lists nothing) is left out, and counts as having nothing."""
    distinct = list({inv.digest: inv for inv in inventories if inv.listed}.values())
    if len(distinct) < 2:
        return {inv.digest: Only() for inv in distinct}
    model_count = Counter(name for inv in distinct for name in kinds[inv.digest])
    node_count = Counter(node for inv in distinct for node in inv.nodes)
    return {inv.digest: Only(Capped.of((m for m in kinds[inv.digest] if model_count[m] == 1), shown),
                             Capped.of((n for n in inv.nodes if node_count[n] == 1), shown))
            for inv in distinct}


@dataclass(frozen=True)
class ModelHeld:
    """One model file of the fleet: the folders it is a choice of, and the backends that list it."""

    name: str
    kinds: frozenset[str]
    backends: tuple[str, ...]


def fleet_models(holders: Iterable[tuple[str, Inventory]], kinds: Mapping[str, Mapping[str, frozenset[str]]],
                 *, backend: str | None = None, text: str = "") -> list[ModelHeld]:
    """The model files of the fleet, by name, each with the backends (ids, in the order given) that list it;
    ``holders``: (backend id, inventory) pairs, ``kinds``: each digest's ``model_kinds``. ``backend``: only the models
    that backend lists; ``text``: only those whose name holds it (any case)."""
    by_digest: dict[str, list[str]] = {}
    for backend_id, inventory in holders:
        if inventory.listed:
            by_digest.setdefault(inventory.digest, []).append(backend_id)
    chosen: set[str] = set()
    if backend is not None:
        chosen = next((set(kinds[d]) for d, ids in by_digest.items() if backend in ids), set())
    needle = text.lower()
    folders: dict[str, set[str]] = {}
    held: dict[str, list[str]] = {}
    for digest, ids in by_digest.items():
        for name, found_in in kinds[digest].items():
            if (backend is None or name in chosen) and needle in name.lower():
                folders.setdefault(name, set()).update(found_in)
                held.setdefault(name, []).extend(ids)
    return [ModelHeld(name, frozenset(folders[name]), tuple(held[name])) for name in sorted(held)]


class Holdings:
    """``model_kinds`` of each inventory and ``exclusive`` of the fleet, remembered: the first until the inventory
    is gone from the fleet, the second until the set of inventories changes."""

    def __init__(self, shown: int = SHOWN_ONLY) -> None:
        self.shown = shown
        self._kinds: dict[str, dict[str, frozenset[str]]] = {}
        self._exclusive: tuple[frozenset[str], dict[str, Only]] | None = None

    def kinds(self, inventories: Iterable[Inventory]) -> dict[str, dict[str, frozenset[str]]]:
        """``model_kinds`` of each of ``inventories`` (the fleet's), by digest; those of the others are forgotten."""
        distinct = {inv.digest: inv for inv in inventories}
        for digest in self._kinds.keys() - distinct.keys():
            del self._kinds[digest]
        for digest, inventory in distinct.items():
            if digest not in self._kinds:
                self._kinds[digest] = model_kinds(inventory)
        return self._kinds

    def exclusive(self, inventories: Sequence[Inventory]) -> dict[str, Only]:
        digests = frozenset(inv.digest for inv in inventories)
        if self._exclusive is None or self._exclusive[0] != digests:
            self._exclusive = digests, exclusive(inventories, self.kinds(inventories), self.shown)
        return self._exclusive[1]
