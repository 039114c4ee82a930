"""A backend's inventory read from its ``/object_info`` (and ``/embeddings``), and what a graph asks of one: its node
classes and the value of each combo input it sets. Pure functions.

A combo whose node checks the file itself (``LoadImage``'s ``image``, with ``image_upload``) is no need: comfyart
delivers those files to whichever backend runs the prompt. Every string is interned: 64 backends that list the same
10,000 model names hold one copy of each.
"""
from __future__ import annotations

import sys
from collections.abc import Callable, Container, Iterable, Mapping
from typing import Any

from comfyart.comfy.validate import (
    FILE_UPLOADS,
    GraphRefused,
    Verdict,
    combo_options,
    error_of,
    output_nodes,
    validate,
)
from comfyart.policy.inventory import Combo, Fleet, Inventory, listed
from comfyart.policy.needs import (
    MODEL_SUFFIXES,
    Needs,
    Setting,
    graph_cost,
    graph_models,
    names_model,
    needs_record,
)


def read_inventory(object_info: Mapping[str, Any], digest: str, embeddings: Any = None,
                   shared: dict[frozenset[str], frozenset[str]] | None = None) -> Inventory:
    """The inventory an ``/object_info`` document (and an ``/embeddings`` list) describe. ``shared`` holds the
    choice sets already known (other documents'): an equal set is kept once, so the LoRA list that 18 node classes
    offer, on 64 backends, is one set."""
    intern = sys.intern
    shared = {} if shared is None else shared
    choices: dict[Combo, frozenset[str]] = {}
    for node, info in object_info.items():
        spec = info.get("input") if isinstance(info, dict) else None
        for section in ("required", "optional"):
            inputs = spec.get(section) if isinstance(spec, dict) else None
            for name, config in (inputs or {}).items() if isinstance(inputs, dict) else ():
                options = _delivered_elsewhere(config)
                if options is None:
                    continue
                listed = frozenset(intern(str(c)) for c in options if isinstance(c, (str, int, float)))
                choices[(intern(node), intern(name))] = shared.setdefault(listed, listed)
    names = frozenset(intern(e) for e in embeddings if isinstance(e, str)) if isinstance(embeddings, list) \
        else frozenset()
    outputs = frozenset(intern(n) for n, info in object_info.items()
                        if isinstance(info, dict) and info.get("output_node") is True)
    return Inventory(digest, frozenset(intern(n) for n in object_info), choices, names, outputs=outputs)


def _delivered_elsewhere(config: Any) -> list[Any] | None:
    """A combo input's choices, or None when it is no combo or its file is delivered with the prompt."""
    if not isinstance(config, list) or not config:
        return None
    options = combo_options(config)
    if options is None:
        return None
    flags = config[1] if len(config) > 1 and isinstance(config[1], dict) else {}
    if any(flags.get(flag) is True for flag in FILE_UPLOADS):
        return None
    return options


def graph_needs(graph: Mapping[str, Any], combos: Container[Combo]) -> tuple[frozenset[str], frozenset[Setting]]:
    """The node classes of ``graph`` and the (class, input, value) of each combo input it sets to a literal, as
    ``combos`` (the fleet's combo inputs) tell combos from other inputs."""
    nodes: set[str] = set()
    values: set[Setting] = set()
    for node in graph.values():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            continue
        node_class = node["class_type"]
        nodes.add(node_class)
        inputs = node.get("inputs")
        for name, value in inputs.items() if isinstance(inputs, dict) else ():
            if isinstance(value, (str, int, float)) and not isinstance(value, bool) and (node_class, name) in combos:
                values.add((node_class, name, str(value)))
    return frozenset(nodes), frozenset(values)


def merge_object_info(merged: dict[str, Any], info: dict[str, Any]) -> None:
    """Fold one backend's /object_info into ``merged``: new classes are added, and the choices of a combo input
    become the union of every backend's."""
    for class_name, class_info in info.items():
        if class_name not in merged:
            merged[class_name] = class_info
            continue
        known = merged[class_name].get("input", {})
        for section in ("required", "optional"):
            for name, spec in (class_info.get("input", {}).get(section) or {}).items():
                mine = (known.get(section) or {}).get(name)
                if (isinstance(mine, list) and mine and isinstance(mine[0], list)
                        and isinstance(spec, list) and spec and isinstance(spec[0], list)):
                    mine[0] = mine[0] + [choice for choice in spec[0] if choice not in mine[0]]


class NotInFleet(GraphRefused):
    """A graph that needs a node class or a model that no backend of the fleet has (422 on comfyart's API; ComfyUI's
    own 400 on the ComfyUI-compatible one)."""

    def __init__(self, verdict: Verdict, message: str) -> None:
        super().__init__(verdict)
        self.summary = message


def missing_from_fleet(verdict: Verdict) -> bool:
    """Whether ComfyUI's validation refused a graph (against the fleet's merged ``/object_info``) only for node
    classes or model files that no backend lists: what comfyart's API answers with 422. (Another value not in a
    list, a sampler's name, is the graph's own error: 400.)"""
    error = verdict.error or {}
    if error.get("type") == "invalid_prompt" and str(error.get("message", "")).endswith("does not exist."):
        return True
    errors = [e for entry in verdict.node_errors.values() for e in entry.get("errors", [])]
    return bool(errors) and all(e.get("type") == "value_not_in_list" and _names_model(e.get("extra_info") or {})
                                for e in errors)


def _names_model(extra_info: Mapping[str, Any]) -> bool:
    value = extra_info.get("received_value")
    # a combo's choice that is a model file, whatever the input's name: a custom node's list of its own files
    return isinstance(value, str) and (names_model(str(extra_info.get("input_name")), value)
                                       or value.lower().endswith(MODEL_SUFFIXES))


def fleet_refusal(graph: Mapping[str, Any], needs: Needs, fleet: Fleet) -> NotInFleet | None:
    """The refusal of a graph that passed validation against the fleet's merged ``/object_info`` but that no one
    backend can run (one has its checkpoint, another its node class), or None. Shaped as the backend that lacks
    the least would refuse it, with the nodes at fault named."""
    reason = fleet.refusal(needs)
    if reason is None:
        return None
    closest = min(fleet.inventories, key=lambda inv: len(inv.missing(needs)))
    missing_nodes = [(node_id, node["class_type"]) for node_id, node in graph.items()
                     if node.get("class_type") not in closest.nodes]
    if missing_nodes:
        node_id, node_class = missing_nodes[0]
        verdict = Verdict(error_of("invalid_prompt", f"Cannot execute because node {node_class} does not exist.",
                                 f"Node ID '#{node_id}'"))
        return NotInFleet(verdict, f"{reason} (node {node_id})")
    outputs = output_nodes(graph, fleet.object_info)
    node_errors: dict[str, Any] = {}
    for node_id, node in graph.items():
        for name, value in (node.get("inputs") or {}).items():
            choices = closest.choices.get((node["class_type"], name))
            if choices is not None and isinstance(value, (str, int, float)) and str(value) not in choices:
                entry = node_errors.setdefault(node_id, {"errors": [], "dependent_outputs": outputs,
                                                         "class_type": node["class_type"]})
                entry["errors"].append(error_of("value_not_in_list", "Value not in list",
                                              f"{name}: '{value}' not in (list of length {len(choices)})",
                                              {"input_name": name, "input_config": None, "received_value": value}))
    verdict = Verdict(error_of("prompt_outputs_failed_validation", "Prompt outputs failed validation"), node_errors)
    return NotInFleet(verdict, f"{reason} (node {', '.join(node_errors) or '?'})")


def not_in_fleet(verdict: Verdict) -> NotInFleet:
    """``NotInFleet`` for a verdict that ``missing_from_fleet`` accepts, its message naming what is missing."""
    error = verdict.error or {}
    if not verdict.node_errors:
        node_class = str(error.get("message", "")).removeprefix("Cannot execute because node ")
        node_class = node_class.removesuffix(" does not exist.")
        return NotInFleet(verdict, f"no backend has node {node_class} ({str(error.get('details', '')).strip()})")
    missing = [f"{e['extra_info'].get('input_name')} '{e['extra_info'].get('received_value')}' (node {node_id})"
               for node_id, entry in verdict.node_errors.items() for e in entry.get("errors", [])]
    return NotInFleet(verdict, f"no backend has {listed(missing)}")


def admitted_needs(graph: Mapping[str, Any], fleet: Fleet, *, tags: Iterable[str] = (),
                   vram_mb: int | None = None) -> dict[str, Any]:
    """What a graph being queued asks of a backend, as its record keeps it (``policy.needs.needs_record``).
    Raises NotInFleet when no backend of the fleet could run it."""
    nodes, values = graph_needs(graph, fleet.combos)
    needs = Needs(frozenset(tags), None if vram_mb is None else vram_mb << 20, graph_models(graph), nodes, values)
    refusal = fleet_refusal(graph, needs, fleet)
    if refusal is not None:
        raise refusal
    return needs_record(needs, graph_cost(graph))


def checked_needs(graph: Mapping[str, Any], fleet: Fleet, *, also_allowed: Callable[[Any], bool] = lambda v: False,
                  tags: Iterable[str] = (), vram_mb: int | None = None) -> dict[str, Any]:
    """A graph queued through comfyart's own API, checked against the fleet: ComfyUI's validation against the
    merged ``/object_info`` (GraphRefused; NotInFleet when only node classes or model files are missing), then
    that one backend has all it needs (NotInFleet). Returns what it needs, as its record keeps it."""
    verdict = validate(graph, fleet.object_info, also_allowed=also_allowed)
    if verdict.error is not None:
        raise not_in_fleet(verdict) if missing_from_fleet(verdict) else GraphRefused(verdict)
    return admitted_needs(graph, fleet, tags=tags, vram_mb=vram_mb)
