"""What a request may send: its JSON body parsed under the depth limit, then validated into one typed value
(``TaskSubmission``, ``RunOptions``, ``ScaleChange``...), with a one-line message naming the field at fault; and
how each body is described in the OpenAPI document."""
from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Self
from urllib.parse import urlsplit

from fastapi import Request
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic import WithJsonSchema as Schema
from pydantic_core import PydanticCustomError

from comfyart.api.bodies import parse_body
from comfyart.auth import Role
from comfyart.comfy.protocol import graph_problem
from comfyart.config.fleet import TAG_PATTERN, StaticBackendConfig, Tag
from comfyart.config.sections import LimitsConfig
from comfyart.config.settings import describe_field_error
from comfyart.errors import InvalidInput
from comfyart.policy.priority import PRIORITY_NAMES, PRIORITY_RANGE, parse_priority
from comfyart.policy.scheduling import Order, Strategy
from comfyart.workflows.definition import WorkflowDefinition

MAX_OFFSET = 1_000_000_000  # Redis takes 64-bit offsets, not any integer a query can spell
MAX_WEBHOOK_URL = 2048
MAX_VRAM_MB = 1 << 24
BACKEND_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
TAG = re.compile(TAG_PATTERN)
REFUSED = "refused"  # the error type of our own checks, whose messages name their field already


def refused(message: str) -> PydanticCustomError:
    return PydanticCustomError(REFUSED, "{detail}", {"detail": message})


def _whole(value: Any) -> bool:
    """An integer as JSON spells it: not a float, not a boolean."""
    return isinstance(value, int) and not isinstance(value, bool)


def describe(exc: ValidationError) -> str:
    """Every error of a body on one line, each naming its field (``pool.min_containers: Input should be ...``)."""
    return "; ".join(error["msg"] if error["type"] == REFUSED else describe_field_error(error)
                     for error in exc.errors())


async def json_body(request: Request, limits: LimitsConfig) -> Any:
    """The body as JSON (``parse_body``), nested no deeper than the limit (FastAPI's own parsing would not check
    that)."""
    return parse_body(await request.body(), request.headers.get("content-type", ""), limits.max_json_depth)


class RequestBody(BaseModel):
    """A JSON object body: a field it does not know is refused by name before any value is checked."""

    model_config = ConfigDict(extra="forbid")
    holds: ClassVar[str] = "its fields"  # what the body must hold, for the message when it is no JSON object

    @classmethod
    def of(cls, body: Any, limits: LimitsConfig | None = None) -> Self:
        """``body`` (parsed JSON) validated; InvalidInput with one line naming each field at fault."""
        if not isinstance(body, dict):
            raise InvalidInput(f"body must be a JSON object with {cls.holds}")
        unknown = sorted(set(body) - set(cls.model_fields))
        if unknown:
            raise InvalidInput(f"unknown field(s): {', '.join(unknown)}")
        try:
            return cls.model_validate(body, context={"limits": limits or LimitsConfig()})
        except ValidationError as exc:
            raise InvalidInput(describe(exc)) from None

    @classmethod
    async def read(cls, request: Request, limits: LimitsConfig) -> Self:
        return cls.of(await json_body(request, limits), limits)


def _params(value: Any) -> Any:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise refused("params must be a JSON object mapping parameter names to values")
    return value


def webhook_problem(url: Any) -> str | None:
    if not isinstance(url, str) or len(url) > MAX_WEBHOOK_URL:
        return f"an http(s) URL of at most {MAX_WEBHOOK_URL} characters"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "an http(s) URL with a host"
    return None


Params = Annotated[dict[str, Any], BeforeValidator(_params),
                   Field(default_factory=dict, description="the workflow's parameters: values by name")]
LOWEST, HIGHEST = PRIORITY_RANGE
PRIORITY_SCHEMA: dict[str, Any] = {
    "anyOf": [{"type": "integer", "minimum": LOWEST, "maximum": HIGHEST}, {"enum": list(PRIORITY_NAMES)},
              {"type": "null"}],
    "description": "higher runs first: high, normal, low or a whole number"}


class Scheduling(RequestBody):
    """What a new task asks of the scheduler (absent or null: the default), and where its end is reported."""

    priority: Annotated[int | None, Schema(PRIORITY_SCHEMA)] = None
    requires: list[Tag] | None = Field(None, description="tags a backend must have to run it")
    vram_mb: int | None = Field(None, ge=1, le=MAX_VRAM_MB, description="VRAM it needs, in MiB")
    webhook: str | None = Field(None, max_length=MAX_WEBHOOK_URL,
                                description="http(s) URL that gets the task's record once it ends")

    @field_validator("priority", mode="before")
    @classmethod
    def _priority(cls, value: Any) -> int | None:
        try:
            return None if value is None else parse_priority(value)
        except ValueError as exc:
            raise refused(f"priority: {exc}") from None

    @field_validator("requires", mode="before")
    @classmethod
    def _requires(cls, value: Any) -> Any:
        if value is not None and not (isinstance(value, list)
                                      and all(isinstance(t, str) and TAG.match(t) for t in value)):
            raise refused("requires: a list of tags (letters, digits, '.', '_', ':', '/', '-'; up to 64)")
        return value

    @field_validator("vram_mb", mode="before")
    @classmethod
    def _vram_mb(cls, value: Any) -> Any:
        if value is not None and not (_whole(value) and 1 <= value <= MAX_VRAM_MB):
            raise refused("vram_mb: a whole number of MiB from 1")
        return value

    @field_validator("webhook", mode="before")
    @classmethod
    def _webhook(cls, value: Any) -> Any:
        problem = None if value is None else webhook_problem(value)
        if problem is not None:
            raise refused(f"webhook: {problem}")
        return value


class TaskSubmission(Scheduling):
    """``POST /api/tasks``: a raw API-format graph (``prompt``), or a run of a stored workflow (``workflow`` and
    its ``params``)."""

    holds: ClassVar[str] = "a 'prompt' field, or 'workflow' and 'params'"
    prompt: dict[str, Any] | None = Field(None, description="a ComfyUI API-format graph")
    workflow: str | None = Field(None, description="the name of a stored workflow")
    params: Params

    @model_validator(mode="before")
    @classmethod
    def _prompt_or_workflow(cls, body: Any) -> Any:
        if not isinstance(body, dict):
            return body
        if "workflow" in body:
            if "prompt" in body:
                raise refused("give either 'prompt' or 'workflow', not both")
            if not isinstance(body["workflow"], str):
                raise refused("workflow must be a workflow's name")
        elif "prompt" not in body:
            raise refused("missing field 'prompt' (a ComfyUI API-format graph) or 'workflow'")
        elif "params" in body:
            raise refused("params apply to a workflow; a raw prompt carries its own values")
        return body

    @field_validator("prompt", mode="before")
    @classmethod
    def _graph(cls, prompt: Any, info: ValidationInfo) -> Any:
        limits = info.context["limits"] if info.context else LimitsConfig()
        problem = graph_problem(prompt, max_nodes=limits.max_graph_nodes)
        if problem is not None:
            raise refused(problem)
        return prompt


class RunOptions(Scheduling):
    """``POST /api/workflows/{name}/run`` as JSON, or the fields of its form (``params`` then holds JSON)."""

    holds: ClassVar[str] = "a 'params' field"
    params: Params


def _whole_or_null(value: Any, info: ValidationInfo) -> Any:
    if value is not None and not (_whole(value) and value >= 0):
        raise refused(f"{info.field_name} must be a whole number >= 0, or null")
    return value


Containers = Annotated[Annotated[int, Field(ge=0)] | None, BeforeValidator(_whole_or_null)]


class ScaleChange(RequestBody):
    """``POST /api/pool/scale``: the fields given change (null: back to the configuration); the others stay."""

    holds: ClassVar[str] = "min_containers, max_containers or target"
    min_containers: Containers = None
    max_containers: Containers = None
    target: Containers = Field(None, description="a fixed number of containers")

    def changes(self) -> dict[str, int | None]:
        return {name: getattr(self, name) for name in self.model_fields_set}


class BackendRegistration(StaticBackendConfig, RequestBody):
    """``POST /api/pool/backends``: a ComfyUI that announces itself."""

    holds: ClassVar[str] = "'name' and 'url'"

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not BACKEND_NAME.match(name):
            raise refused("name: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
        return name


# int | float: a whole number stays one in the key's record
Rate = Annotated[int | float | None, Schema({"anyOf": [{"type": "number", "minimum": 0}, {"type": "null"}]})]


class KeyCreation(RequestBody):
    """``POST /api/keys``: a new key's name, role and quotas (null: the configured ones)."""

    holds: ClassVar[str] = "'name' and 'role'"
    name: str = Field(pattern=KEY_NAME.pattern)
    role: Role = Role.CLIENT
    max_queued: int | None = Field(None, ge=0, description="0: no limit")
    submissions_per_minute: Rate = Field(None, description="0: no limit")

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, name: Any) -> Any:
        if not isinstance(name, str) or not KEY_NAME.match(name):
            raise refused("name: 1-64 letters, digits, '.', '_', '@' or '-'")
        return name

    @field_validator("role", mode="before")
    @classmethod
    def _role(cls, role: Any) -> Any:
        if role not in ("admin", "client"):
            raise refused("role: admin or client")
        return role

    @field_validator("max_queued", mode="before")
    @classmethod
    def _max_queued(cls, value: Any) -> Any:
        if value is not None and not (_whole(value) and value >= 0):
            raise refused("max_queued: a whole number >= 0 (0: no limit)")
        return value

    @field_validator("submissions_per_minute", mode="before")
    @classmethod
    def _rate(cls, value: Any) -> Any:
        if value is not None and not ((_whole(value) or isinstance(value, float)) and value >= 0):
            raise refused("submissions_per_minute: a number >= 0 (0: no limit)")
        return value


class SchedulerChange(RequestBody):
    """``PUT /api/scheduler``: the settings given change (null: back to the configured value). Their bounds are
    the configuration's (``SchedulerConfig``), checked when applied."""

    holds: ClassVar[str] = "scheduler settings"
    strategy: Strategy | None = None
    order: Order | None = None
    prefetch: int | None = None
    lookahead: int | None = None
    priority_ageing_s: float | None = None
    affinity_max_skips: int | None = None

    def changes(self) -> dict[str, Any]:
        return self.model_dump(mode="json", include=self.model_fields_set)


class GraphBody(RequestBody):
    """``POST /api/workflows/infer``: a graph to find candidate parameters in."""

    holds: ClassVar[str] = "a 'graph' field"
    graph: dict[str, Any] = Field(description="a ComfyUI API-format graph")

    @field_validator("graph", mode="before")
    @classmethod
    def _graph(cls, graph: Any) -> Any:
        problem = graph_problem(graph)
        if problem is not None:
            raise refused(f"graph: {problem}")
        return graph


async def workflow_definition(request: Request, limits: LimitsConfig) -> WorkflowDefinition:
    """``PUT /api/workflows/{name}``: the definition as its own model describes it (``graph: Field required``)."""
    try:
        return WorkflowDefinition.model_validate(await json_body(request, limits))
    except ValidationError as exc:
        raise InvalidInput(describe(exc)) from None


# ---------------------------------------------------------------------------------------------------- OpenAPI
def schema_of(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s JSON schema with its definitions written in place: an operation's schema cannot point into a
    ``$defs`` of its own."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(definitions[ref.removeprefix("#/$defs/")])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    result: dict[str, Any] = inline(schema)
    return result


def body_doc(model: type[BaseModel], *, form: dict[str, Any] | None = None,
             required: bool = True) -> dict[str, Any]:
    """The ``openapi_extra`` of a route that reads its body itself: the body's schema, as JSON (and as a form)."""
    content: dict[str, Any] = {"application/json": {"schema": schema_of(model)}}
    if form is not None:
        content["multipart/form-data"] = {"schema": form}
    return {"requestBody": {"required": required, "content": content}}
