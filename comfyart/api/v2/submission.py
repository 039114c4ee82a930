"""The body of ``POST /api/v2/jobs`` (API-V2.md §6.1) read into what comfyart queues, or refused with the v2 code
that says why. Pure: the graph is only checked for shape here; its check against the fleet's ``/object_info``
(``invalid_workflow`` with ``details.node_errors``) is the route's, as for ``/api/tasks``.

Decisions:
- ``extra_data`` is closed (only ``api_key_comfy_org``, a string) and never kept: comfyart sends no per-prompt
  extra_data to its backends, and a comfy.org key must not rest in Redis.
- ``metadata`` (the job's labels, ``api.v2.labels``) is checked and kept on the task; the list filters on it.
- ``priority`` is comfyart's (``high``/``normal``/``low`` or -100..100), not the contract's ±1e6."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from comfyart.api.v2.labels import labels_problem
from comfyart.comfy.protocol import graph_problem
from comfyart.policy.priority import parse_priority

FIELDS = frozenset({"workflow", "extra_data", "metadata", "priority"})
RESERVED = frozenset({"webhook_url", "inputs"})  # the contract's, refused by name
EXTRA_DATA_FIELDS = frozenset({"api_key_comfy_org"})


@dataclass(frozen=True)
class Submission:
    """A body that may be queued: an API-format graph of plausible shape, its priority and labels."""

    workflow: dict[str, Any]
    priority: int = 0
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Refusal:
    """Why a body is refused: a v2 error code, one line, the HTTP status when it is not the code's own."""

    code: str
    message: str
    status: int | None = None


def is_ui_format(workflow: dict[str, Any]) -> bool:
    """A ComfyUI editor export (``File > Save``: a list of ``nodes`` and their ``links``), not the API format a
    server runs."""
    return isinstance(workflow.get("nodes"), list) and "links" in workflow


def extra_data_problem(extra_data: Any) -> str | None:
    if extra_data is None:
        return None
    if not isinstance(extra_data, dict):
        return "extra_data must be an object"
    unknown = sorted(set(extra_data) - EXTRA_DATA_FIELDS)
    if unknown:
        return f"extra_data may hold only api_key_comfy_org; unknown: {', '.join(unknown)}"
    if not all(isinstance(value, str) for value in extra_data.values()):
        return "extra_data.api_key_comfy_org must be a string"
    return None


def _fields_refusal(body: dict[str, Any]) -> Refusal | None:
    reserved = sorted(RESERVED & set(body))
    if reserved:
        return Refusal("invalid_request", f"field(s) reserved by the API and not accepted: {', '.join(reserved)}",
                       422)
    unknown = sorted(set(body) - FIELDS - RESERVED)
    if unknown:
        return Refusal("invalid_request", f"unknown field(s): {', '.join(unknown)}", 422)
    problem = extra_data_problem(body.get("extra_data"))
    return Refusal("invalid_request", problem) if problem is not None else None


def _workflow_refusal(workflow: Any, max_nodes: int) -> Refusal | None:
    if not isinstance(workflow, dict):
        what = "missing" if workflow is None else "not an object"
        return Refusal("invalid_workflow", f"workflow is {what}: send an API-format graph as 'workflow'")
    if is_ui_format(workflow):
        return Refusal("workflow_format_ui", "workflow is a UI export (nodes and links); export it in API format "
                                             "(ComfyUI: Workflow > Export (API))")
    problem = graph_problem(workflow, max_nodes=max_nodes)
    return Refusal("invalid_workflow", f"workflow: {problem}") if problem is not None else None


def read_submission(body: Any, *, max_nodes: int) -> Submission | Refusal:
    """``body`` (parsed JSON) as a Submission, or the first reason to refuse it: the fields, then the workflow,
    then the priority and the labels."""
    if not isinstance(body, dict):
        return Refusal("invalid_request", "body must be a JSON object with a 'workflow' field")
    refusal = _fields_refusal(body) or _workflow_refusal(body.get("workflow"), max_nodes)
    if refusal is not None:
        return refusal
    try:
        priority = 0 if body.get("priority") is None else parse_priority(body["priority"])
    except ValueError as exc:
        return Refusal("invalid_request", f"priority: {exc}", 422)
    metadata = body.get("metadata")
    if metadata is not None:
        problem = labels_problem(metadata)
        if problem is not None:
            return Refusal("metadata_invalid", problem)
    return Submission(body["workflow"], priority, dict(metadata or {}))
