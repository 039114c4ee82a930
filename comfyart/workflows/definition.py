"""Workflows as templates: a stored ComfyUI API-format graph plus a parameter map (``parameters``).

Pure decision logic, no I/O: checking a definition against its graph, inferring candidate parameters from a
graph, and deciding what a workflow file found at start-up should do to the stored one.
"""
from __future__ import annotations

import enum
import hashlib
import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from comfyart.comfy.protocol import graph_problem
from comfyart.config.fleet import Tag
from comfyart.workflows.parameters import (
    PARAMETER_NAME,
    SEED_PARAMETER,
    Parameter,
    ParamType,
    Target,
    check_value,
    is_link,
    is_number,
    show_bound,
)

if TYPE_CHECKING:  # the randomness comes in as an argument
    pass

WORKFLOW_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
IMAGE_LOADERS = {"LoadImage": "image", "LoadImageMask": "image", "LoadImageOutput": "image"}
SEED_INPUTS = ("seed", "noise_seed")


class WorkflowDefinition(BaseModel):
    """What a user writes: the API-format graph, the parameter map, and optionally the UI-format graph."""

    model_config = ConfigDict(extra="forbid")
    graph: dict[str, Any]
    params: dict[str, Parameter] = Field(default_factory=dict)
    ui: dict[str, Any] | None = Field(None, description="the UI-format graph exported from ComfyUI, kept as is")
    description: str = ""
    requires: list[Tag] = Field(
        default_factory=list, description="tags a backend must have to run it (e.g. video, gpu:a100)")
    vram_mb: int | None = Field(None, ge=1, description="VRAM it needs; backends with less are skipped")

    def content_sha(self) -> str:
        """Identical definitions hash alike whatever their key order or shorthand targets."""
        document = self.model_dump(mode="json")
        for key in ("requires", "vram_mb"):  # added later: left out while unset, so older hashes still match
            if not document[key]:
                del document[key]
        canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


class Workflow(WorkflowDefinition):
    name: str
    version: int
    created_ms: int
    updated_ms: int
    source: str = Field(description="'api' or the file it was loaded from")


# --------------------------------------------------------------------------- definitions


def _fits(kind: ParamType, graph_value: Any) -> bool:
    """Whether a parameter of ``kind`` may replace ``graph_value`` without changing what sort of input it is."""
    if kind is ParamType.INT:
        return is_number(graph_value) and float(graph_value).is_integer()
    if kind is ParamType.FLOAT:
        return is_number(graph_value)
    if kind in (ParamType.STRING, ParamType.IMAGE):
        return isinstance(graph_value, str)
    if kind is ParamType.BOOL:
        return isinstance(graph_value, bool)
    return isinstance(graph_value, (str, int, float, bool))  # a choice


def definition_problems(definition: WorkflowDefinition) -> list[str]:
    """Everything wrong with a definition, each naming where; empty when it can be stored."""
    problem = graph_problem(definition.graph)
    if problem is not None:
        if isinstance(definition.graph.get("nodes"), list):
            problem = "graph is in ComfyUI's UI format; export it with 'Export (API)' (it may go in 'ui' beside it)"
        return [f"graph: {problem}"]
    problems = []
    for name, param in definition.params.items():
        where = f"params.{name}"
        if not PARAMETER_NAME.match(name):
            problems.append(f"{where}: a parameter name is letters, digits and '_', not starting with a digit")
        for target in param.target:
            node = definition.graph.get(target.node)
            if node is None:
                problems.append(f"{where}: target node {target.node!r} is not in the graph")
                continue
            inputs = node.get("inputs", {})
            if target.input not in inputs:
                known = ", ".join(inputs) or "none"
                problems.append(f"{where}: node {target.node} ({node['class_type']}) has no input "
                                f"{target.input!r} (it has: {known})")
            elif is_link(inputs[target.input]):
                problems.append(f"{where}: {target} is a link to another node, not a value")
            elif not _fits(param.type, inputs[target.input]):
                problems.append(f"{where}: {target} holds {inputs[target.input]!r}, which is not of type "
                                f"{param.type}")
        numeric = param.type in (ParamType.INT, ParamType.FLOAT)
        if not numeric and (param.min is not None or param.max is not None):
            problems.append(f"{where}: min and max apply to int and float parameters only")
        if param.min is not None and param.max is not None and param.min > param.max:
            problems.append(f"{where}: min {show_bound(param.min)} exceeds max {show_bound(param.max)}")
        if param.type is ParamType.CHOICE and not param.choices:
            problems.append(f"{where}: a choice parameter needs a non-empty 'choices' list")
        if param.type is not ParamType.CHOICE and param.choices is not None:
            problems.append(f"{where}: 'choices' applies to choice parameters only")
        if param.default is not None:
            try:
                check_value(param, param.default, name=name)
            except ValueError as exc:
                problems.append(f"{where}.default: {exc}")
        if param.required and param.default is not None:
            problems.append(f"{where}: a required parameter has no default")
    return problems


def _numeric_order(node_id: str) -> tuple[tuple[int, int, str], ...]:
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"[:.]", node_id))


def _parameter_name(raw: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_]", "_", raw)
    return name if name and not name[0].isdigit() else f"p_{name}"


def infer_parameters(graph: Mapping[str, Any]) -> dict[str, Parameter]:
    """Candidate parameters: every literal input of the graph (links are wiring, not values), named after the
    input, or ``input_node`` when several nodes share it. A lone seed input becomes ``seed`` (random when
    omitted). Prune the list and add bounds before storing it."""
    found = []
    for node_id in sorted(graph, key=_numeric_order):
        node = graph[node_id]
        title = (node.get("_meta") or {}).get("title") or node.get("class_type", "")
        for input_name, value in (node.get("inputs") or {}).items():
            if is_link(value) or isinstance(value, (dict, list)) or value is None:
                continue
            if IMAGE_LOADERS.get(node.get("class_type")) == input_name:
                kind = ParamType.IMAGE
            elif isinstance(value, bool):
                kind = ParamType.BOOL
            elif isinstance(value, int):
                kind = ParamType.INT
            elif isinstance(value, float):
                kind = ParamType.FLOAT
            else:
                kind = ParamType.STRING
            found.append((node_id, input_name, kind, f"{title} (node {node_id}): {input_name}"))
    seeds = [f for f in found if f[1] in SEED_INPUTS and f[2] is ParamType.INT]
    counts: dict[str, int] = {}
    for _, input_name, _, _ in found:
        counts[input_name] = counts.get(input_name, 0) + 1
    candidates: dict[str, Parameter] = {}
    for node_id, input_name, kind, description in found:
        if len(seeds) == 1 and (node_id, input_name) == seeds[0][:2]:
            name = SEED_PARAMETER
        elif counts[input_name] == 1 and input_name != SEED_PARAMETER:
            name = _parameter_name(input_name)
        else:
            name = _parameter_name(f"{input_name}_{node_id}")
        if name == SEED_PARAMETER:
            description += " (omitted or -1: random)"
        candidates[name] = Parameter(type=kind, target=[Target(node=node_id, input=input_name)],
                                     description=description)
    return candidates


# --------------------------------------------------------------------------- files at start-up


class FileLoad(enum.StrEnum):
    CREATE = "create"  # no such workflow stored yet
    REPLACE = "replace"  # the file changed after the stored version was written
    UNCHANGED = "unchanged"  # the stored version already has this content
    KEEP_STORED = "keep_stored"  # the stored version (an edit through the API) is newer than the file


def file_load_action(*, stored_sha: str | None, stored_updated_ms: int | None, file_sha: str,
                     file_mtime_ms: int) -> FileLoad:
    """The newer of the file and the stored version wins; identical content never makes a new version."""
    if stored_sha is None or stored_updated_ms is None:
        return FileLoad.CREATE
    if stored_sha == file_sha:
        return FileLoad.UNCHANGED
    if stored_updated_ms >= file_mtime_ms:
        return FileLoad.KEEP_STORED
    return FileLoad.REPLACE


def workflow_name_problem(name: str) -> str | None:
    if WORKFLOW_NAME.match(name):
        return None
    return "a workflow name is 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"
