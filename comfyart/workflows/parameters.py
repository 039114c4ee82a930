"""A workflow's typed parameters: what each one is (type, targets, bounds, choices), checking a request's values
against them, binding them (request, then defaults, then the graph's own values; a random seed when none is
given) and writing them into a copy of the graph. Pure: the randomness comes in as an argument."""
from __future__ import annotations

import copy
import enum
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator

if TYPE_CHECKING:  # the randomness comes in as an argument
    import random

PARAMETER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
SEED_PARAMETER = "seed"
RANDOM_SEED = -1
SEED_MAX = 2**53 - 1  # the largest integer every JSON client (JavaScript included) keeps exact
SEED_INPUTS = frozenset({"seed", "noise_seed"})  # ComfyUI's names for a sampler's seed
SEED_LIMIT = 0xFFFFFFFFFFFFFFFF  # ComfyUI's bounds of a seed, 0..2^64-1, while no backend has said otherwise
SHOWN_CHARS = 40  # a value quoted in a message is cut after this many characters
NUMBER_DIGITS = 20  # a number after this many


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


class ParameterError(ValueError):
    """Values a request gave that the map refuses; ``problems`` maps each parameter to why."""

    def __init__(self, problems: dict[str, str]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"params.{name}: {why}" for name, why in problems.items()))


# --------------------------------------------------------------------------- values


def is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Bounds:
    """The range a number parameter's value must fall in (None: unbounded on that side)."""

    low: int | float | None = None
    high: int | float | None = None

    def narrowed(self, low: Any, high: Any) -> Bounds:
        """These bounds, narrowed by ``low`` and ``high`` where they are numbers and tighter."""
        new_low = low if is_number(low) and (self.low is None or low > self.low) else self.low
        new_high = high if is_number(high) and (self.high is None or high < self.high) else self.high
        return Bounds(new_low, new_high)

    def holds(self, value: int | float) -> bool:
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)

    def __str__(self) -> str:
        low, high = (None if b is None else show_bound(b) for b in (self.low, self.high))
        if low is not None and high is not None:
            return f" between {low} and {high}"
        return f" >= {low}" if low is not None else f" <= {high}" if high is not None else ""


def is_seed(param: Parameter, name: str) -> bool:
    """A seed: named ``seed``, or an int targeting a sampler's seed input."""
    return param.type is ParamType.INT and (name == SEED_PARAMETER
                                            or any(t.input in SEED_INPUTS for t in param.target))


def bounds_of(param: Parameter, name: str = "", graph: Mapping[str, Any] | None = None,
              object_info: Mapping[str, Any] | None = None) -> Bounds:
    """What a number parameter's value must lie between: its own ``min``/``max``, ComfyUI's range of a seed, and
    the ``min``/``max`` of every input it targets, where the fleet's ``object_info`` is known."""
    bounds = Bounds(param.min, param.max)
    if is_seed(param, name):
        bounds = bounds.narrowed(0, SEED_LIMIT)
    for target in param.target if graph is not None and object_info is not None else ():
        options = target_options(graph or {}, object_info or {}, target)
        bounds = bounds.narrowed(options.get("min"), options.get("max"))
    return bounds


def target_options(graph: Mapping[str, Any], object_info: Mapping[str, Any], target: Target) -> Mapping[str, Any]:
    """The options (``{"min", "max", ...}``) of a number input a target names, per ``object_info``; {} if unknown."""
    node = graph.get(target.node)
    node_class = node.get("class_type") if isinstance(node, dict) else None
    info = object_info.get(node_class) if isinstance(node_class, str) else None
    inputs = info.get("input") if isinstance(info, dict) else None
    for section in ("required", "optional"):
        specs = inputs.get(section) if isinstance(inputs, dict) else None
        spec = specs.get(target.input) if isinstance(specs, dict) else None
        if isinstance(spec, list) and len(spec) > 1 and spec[0] in ("INT", "FLOAT") and isinstance(spec[1], dict):
            return spec[1]
    return {}


def check_value(param: Parameter, value: Any, *, name: str = "", bounds: Bounds | None = None) -> Any:
    """``value`` as the parameter takes it (an integral float becomes an int, an image reference a dict), or
    ValueError saying why not. A number must lie within ``bounds`` (default: the parameter's own)."""
    kind = param.type
    limits = bounds_of(param, name) if bounds is None else bounds
    if kind is ParamType.INT:
        if not is_number(value) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"must be an integer{limits}, got {shown(value)}")
        if name == SEED_PARAMETER and value == RANDOM_SEED:
            return RANDOM_SEED
        if not limits.holds(value):
            raise ValueError(f"must be an integer{limits}, got {shown(value)}")
        return int(value)
    if kind is ParamType.FLOAT:
        if not is_number(value) or not math.isfinite(value) or not limits.holds(value):
            raise ValueError(f"must be a number{limits}, got {shown(value)}")
    elif kind is ParamType.STRING:
        if not isinstance(value, str):
            raise ValueError(f"must be a string, got {shown(value)}")
    elif kind is ParamType.BOOL:
        if not isinstance(value, bool):
            raise ValueError(f"must be true or false, got {shown(value)}")
    elif kind is ParamType.CHOICE:
        choices = param.choices or []
        if not any(type(value) is type(choice) and value == choice for choice in choices):
            raise ValueError(f"must be one of {shown(choices, 200)}, got {shown(value)}")
    elif kind is ParamType.IMAGE:
        return image_ref(value).model_dump(exclude_none=True)
    return value


def show_bound(bound: int | float) -> str:
    """A bound as a user reads it: ``10``, not ``10.0``; a huge one in short."""
    if isinstance(bound, float) and bound.is_integer() and abs(bound) < 1e21:
        bound = int(bound)
    return shown(bound)


def shown(value: Any, limit: int = SHOWN_CHARS) -> str:
    """``value`` as a message quotes it, cut short (a 309-digit number must not fill a line)."""
    text = repr(value)
    if is_number(value):
        limit = min(limit, NUMBER_DIGITS + 1)  # 2^64 - 1 still shows in full
    return text if len(text) <= limit else text[:limit - 1] + "…"


def image_ref(value: Any) -> ImageRef:
    """An image parameter's value as a reference, or ValueError naming the two accepted forms."""
    forms = ('an upload ({"input": ID}, or a file in a multipart request) or an earlier task\'s output '
             '({"task": ID, "filename": NAME})')
    if not isinstance(value, dict):
        raise ValueError(f"must be {forms}, got {shown(value)}")
    try:
        ref = ImageRef.model_validate(value)
    except ValueError:
        raise ValueError(f"must be {forms}, got {shown(value)}") from None
    by_input = ref.input is not None and ref.task is None and ref.filename is None
    by_output = ref.input is None and ref.task is not None and ref.filename is not None
    if not (by_input or by_output) or not all(isinstance(v, str) and v for v in value.values()):
        raise ValueError(f"must be {forms}, got {shown(value)}")
    return ref


def random_seed(bounds: Bounds, rng: random.Random) -> int:
    """A seed within ``bounds`` and exact in every JSON client (0..2^53-1)."""
    low = max(0, math.ceil(bounds.low)) if bounds.low is not None else 0
    high = min(SEED_MAX, math.floor(bounds.high)) if bounds.high is not None else SEED_MAX
    return rng.randint(low, max(low, high))


def bind(params: Mapping[str, Parameter], request: Mapping[str, Any], rng: random.Random, *,
         graph: Mapping[str, Any] | None = None, object_info: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The values a task runs with: the request's, else the map's default, else (by leaving it out) the graph's
    own. A ``seed`` parameter that is -1, or omitted with no default of its own, gets a random seed, which the
    returned values record. A number must also lie within the bounds of the inputs it targets in ``graph`` where
    ``object_info`` (the fleet's) is known. Raises ParameterError naming every parameter at fault."""
    problems: dict[str, str] = {}
    for unknown in sorted(set(request) - set(params)):
        known = ", ".join(params) or "none"
        problems[unknown] = f"unknown parameter (this workflow takes: {known})"
    values: dict[str, Any] = {}
    for name, param in params.items():
        bounds = bounds_of(param, name, graph, object_info)
        if name in request:
            try:
                values[name] = check_value(param, request[name], name=name, bounds=bounds)
            except ValueError as exc:
                problems[name] = str(exc)
                continue
        elif param.default is not None:
            values[name] = param.default
        elif param.required:
            problems[name] = "required"
            continue
        if name == SEED_PARAMETER and param.type is ParamType.INT and values.get(name, RANDOM_SEED) == RANDOM_SEED:
            values[name] = random_seed(bounds, rng)
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
