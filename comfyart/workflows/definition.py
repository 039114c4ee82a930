"""Workflows as templates: a stored ComfyUI API-format graph plus a parameter map.

Pure decision logic, no I/O: checking a definition against its graph, binding a request's values (request, then
the map's defaults, then the graph's own values), applying bound values to a copy of the graph, inferring
candidate parameters from a graph, and deciding what a workflow file found at start-up should do to the stored
one.
"""
from __future__ import annotations

import copy
import enum
import hashlib
import json
import math
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator

from comfyart.comfy.protocol import graph_problem
from comfyart.config.fleet import Tag

WORKFLOW_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
PARAMETER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
SEED_PARAMETER = "seed"
RANDOM_SEED = -1
SEED_MAX = 2**53 - 1  # the largest integer every JSON client (JavaScript included) keeps exact
IMAGE_LOADERS = {"LoadImage": "image", "LoadImageMask": "image", "LoadImageOutput": "image"}
SEED_INPUTS = ("seed", "noise_seed")


class ParamType(enum.StrEnum):
    INT = "int"
    FLOAT = "float"
    STRING = "string"
    BOOL = "bool"
    IMAGE = "image"
    CHOICE = "choice"


class Target(BaseModel):
    """One input of one node: ``{"node": "3", "input": "seed"}``, or the shorthand ``"3.seed"``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    node: str = Field(min_length=1)
    input: str = Field(min_length=1)

    def __str__(self) -> str:
        return f"{self.node}.{self.input}"


def _parse_target(value: Any) -> Any:
    if isinstance(value, str):
        node, dot, name = value.rpartition(".")  # input names have no dot; node ids may ("10:2.seed" is fine)
        if not dot or not node or not name:
            raise ValueError(f"target {value!r} must look like NODE.INPUT, e.g. 3.seed")
        return {"node": node, "input": name}
    return value


class Parameter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: ParamType
    target: list[Target] = Field(min_length=1, description="one input, or several that take the same value")
    default: Any = None
    min: float | None = None
    max: float | None = None
    choices: list[bool | int | float | str] | None = None
    required: bool = False
    description: str = ""

    @field_validator("target", mode="before")
    @classmethod
    def _targets(cls, value: Any) -> Any:
        values = value if isinstance(value, list) else [value]
        return [_parse_target(v) for v in values]

    @field_serializer("min", "max")
    def _whole_bounds(self, bound: float | None) -> int | float | None:
        return int(bound) if bound is not None and self.type is ParamType.INT and bound.is_integer() else bound


class ImageRef(BaseModel):
    """Where an image parameter's file comes from: an upload (``input``) or an earlier task's output
    (``task`` + ``filename``). Never a URL: comfyart delivers the file to whichever backend runs the task."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    input: str | None = None
    task: str | None = None
    filename: str | None = None


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


class ParameterError(ValueError):
    """Values a request gave that the map refuses; ``problems`` maps each parameter to why."""

    def __init__(self, problems: dict[str, str]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"params.{name}: {why}" for name, why in problems.items()))


# --------------------------------------------------------------------------- values


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_value(param: Parameter, value: Any, *, name: str = "") -> Any:
    """``value`` as the parameter takes it (an integral float becomes an int, an image reference a dict), or
    ValueError saying why not."""
    kind = param.type
    if kind is ParamType.INT:
        if not _number(value) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"must be an integer, got {value!r}")
        value = int(value)
        if name == SEED_PARAMETER and value == RANDOM_SEED:
            return value
    elif kind is ParamType.FLOAT:
        if not _number(value) or not math.isfinite(value):
            raise ValueError(f"must be a number, got {value!r}")
    elif kind is ParamType.STRING:
        if not isinstance(value, str):
            raise ValueError(f"must be a string, got {value!r}")
    elif kind is ParamType.BOOL:
        if not isinstance(value, bool):
            raise ValueError(f"must be true or false, got {value!r}")
    elif kind is ParamType.CHOICE:
        choices = param.choices or []
        if not any(type(value) is type(choice) and value == choice for choice in choices):
            raise ValueError(f"must be one of {choices}, got {value!r}")
    elif kind is ParamType.IMAGE:
        return image_ref(value).model_dump(exclude_none=True)
    if kind in (ParamType.INT, ParamType.FLOAT):
        if param.min is not None and value < param.min:
            raise ValueError(f"{value} is below the minimum {_show(param.min)}")
        if param.max is not None and value > param.max:
            raise ValueError(f"{value} is above the maximum {_show(param.max)}")
    return value


def _show(bound: float) -> str:
    return str(int(bound)) if bound.is_integer() else str(bound)


def image_ref(value: Any) -> ImageRef:
    """An image parameter's value as a reference, or ValueError naming the two accepted forms."""
    forms = ('an upload ({"input": ID}, or a file in a multipart request) or an earlier task\'s output '
             '({"task": ID, "filename": NAME})')
    if not isinstance(value, dict):
        raise ValueError(f"must be {forms}, got {value!r}")
    try:
        ref = ImageRef.model_validate(value)
    except ValueError:
        raise ValueError(f"must be {forms}, got {value!r}") from None
    by_input = ref.input is not None and ref.task is None and ref.filename is None
    by_output = ref.input is None and ref.task is not None and ref.filename is not None
    if not (by_input or by_output) or not all(isinstance(v, str) and v for v in value.values()):
        raise ValueError(f"must be {forms}, got {value!r}")
    return ref


def random_seed(param: Parameter, rng: random.Random) -> int:
    low = max(0, math.ceil(param.min)) if param.min is not None else 0
    high = min(SEED_MAX, math.floor(param.max)) if param.max is not None else SEED_MAX
    return rng.randint(low, max(low, high))


def bind(params: Mapping[str, Parameter], request: Mapping[str, Any], rng: random.Random) -> dict[str, Any]:
    """The values a task runs with: the request's, else the map's default, else (by leaving it out) the graph's
    own. A ``seed`` parameter that is -1, or omitted with no default of its own, gets a random seed, which the
    returned values record. Raises ParameterError naming every parameter at fault."""
    problems: dict[str, str] = {}
    for unknown in sorted(set(request) - set(params)):
        known = ", ".join(params) or "none"
        problems[unknown] = f"unknown parameter (this workflow takes: {known})"
    values: dict[str, Any] = {}
    for name, param in params.items():
        if name in request:
            try:
                values[name] = check_value(param, request[name], name=name)
            except ValueError as exc:
                problems[name] = str(exc)
                continue
        elif param.default is not None:
            values[name] = param.default
        elif param.required:
            problems[name] = "required"
            continue
        if name == SEED_PARAMETER and param.type is ParamType.INT and values.get(name, RANDOM_SEED) == RANDOM_SEED:
            values[name] = random_seed(param, rng)
    if problems:
        raise ParameterError(problems)
    return values


@dataclass(frozen=True)
class ImageInput:
    """An image parameter whose file must reach the backend before the prompt does."""

    param: str
    ref: ImageRef


def image_inputs(params: Mapping[str, Parameter], values: Mapping[str, Any]) -> list[ImageInput]:
    return [ImageInput(name, ImageRef.model_validate(values[name])) for name, param in params.items()
            if param.type is ParamType.IMAGE and name in values]


def apply(graph: Mapping[str, Any], params: Mapping[str, Parameter], values: Mapping[str, Any],
          image_names: Mapping[str, str]) -> dict[str, Any]:
    """A copy of ``graph`` with each bound value written into its targets. Image parameters take the file name
    the backend knows their file by (``image_names``)."""
    resolved = copy.deepcopy(dict(graph))
    for name, value in values.items():
        param = params[name]
        if param.type is ParamType.IMAGE:
            value = image_names[name]
        for target in param.target:
            resolved[target.node]["inputs"][target.input] = value
    return resolved


# --------------------------------------------------------------------------- definitions


def _fits(kind: ParamType, graph_value: Any) -> bool:
    """Whether a parameter of ``kind`` may replace ``graph_value`` without changing what sort of input it is."""
    if kind is ParamType.INT:
        return _number(graph_value) and float(graph_value).is_integer()
    if kind is ParamType.FLOAT:
        return _number(graph_value)
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
            elif _is_link(inputs[target.input]):
                problems.append(f"{where}: {target} is a link to another node, not a value")
            elif not _fits(param.type, inputs[target.input]):
                problems.append(f"{where}: {target} holds {inputs[target.input]!r}, which is not of type "
                                f"{param.type}")
        numeric = param.type in (ParamType.INT, ParamType.FLOAT)
        if not numeric and (param.min is not None or param.max is not None):
            problems.append(f"{where}: min and max apply to int and float parameters only")
        if param.min is not None and param.max is not None and param.min > param.max:
            problems.append(f"{where}: min {_show(param.min)} exceeds max {_show(param.max)}")
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


def _numeric_order(node_id: str) -> tuple:
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
            if _is_link(value) or isinstance(value, (dict, list)) or value is None:
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

