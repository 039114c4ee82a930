"""Pure translation of ComfyUI's wire formats: WebSocket frames and /history entries become typed events.

No I/O here; see shared/comfyui/PROTOCOL.md for the formats.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class StatusEvent:
    queue_remaining: int


@dataclass(frozen=True)
class ExecutionStart:
    prompt_id: str


@dataclass(frozen=True)
class ExecutionCached:
    prompt_id: str
    nodes: list[str]


@dataclass(frozen=True)
class Executing:
    prompt_id: str | None  # None in the reconnect variant that carries only the node
    node: str | None  # None: the end-of-prompt marker


@dataclass(frozen=True)
class Progress:
    prompt_id: str
    node: str | None
    value: float
    max: float


@dataclass(frozen=True)
class Executed:
    prompt_id: str
    node: str
    output: dict[str, Any]


@dataclass(frozen=True)
class ExecutionSuccess:
    prompt_id: str


@dataclass(frozen=True)
class ExecutionError:
    prompt_id: str
    node_id: str | None
    node_type: str | None
    exception_type: str
    exception_message: str


@dataclass(frozen=True)
class ExecutionInterrupted:
    prompt_id: str
    node_id: str | None
    node_type: str | None


Event = (StatusEvent | ExecutionStart | ExecutionCached | Executing | Progress | Executed | ExecutionSuccess
         | ExecutionError | ExecutionInterrupted)


# the frames the tracker acts on; the others (status, progress_state, custom nodes' own) only matter to a ComfyUI
# client whose prompt is relayed
TRACKED_KINDS = frozenset({"execution_start", "execution_cached", "executing", "progress", "executed",
                           "execution_success", "execution_error", "execution_interrupted"})
_KIND_PREFIX = '{"type": "'


def frame_kind(text: str) -> str | None:
    """A text frame's type read from its first bytes, as ComfyUI writes every frame (``json.dumps({"type": ...,
    "data": ...})``), without parsing the rest; None when it does not start that way. Most frames at full
    throughput are ones the tracker drops (two ``progress_state`` per node), and parsing them cost more than
    using the others."""
    if not text.startswith(_KIND_PREFIX):
        return None
    end = text.find('"', len(_KIND_PREFIX))
    kind = text[len(_KIND_PREFIX):end]
    return kind if end > 0 and "\\" not in kind else None


def split_frame(text: str) -> tuple[str, dict[str, Any] | None]:
    """One text frame → (its type, its data), or ("", None) for one that is not ComfyUI's shape (a prompt id
    that is not a string included: it could not name a prompt)."""
    try:
        message = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nested too deep to parse
        return "", None
    if not isinstance(message, dict) or not isinstance(message.get("data"), dict):
        return "", None
    if not isinstance(message["data"].get("prompt_id", ""), (str, type(None))):
        return "", None
    return str(message.get("type")), message["data"]


def parse_frame(text: str) -> Event | None:
    """One text frame → an event, or None for frames comfyart does not use (or cannot read)."""
    kind, data = split_frame(text)
    return parse_message(kind, data) if data is not None else None


class _Unreadable(ValueError):
    pass


def _node(value: Any) -> str | None:
    """A node id as ComfyUI sends it (a string; an int from older servers), or None; anything else is junk."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _Unreadable(value)
    return str(value)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)[:10_000]


def parse_message(kind: str, data: dict[str, Any]) -> Event | None:
    """An event of a frame comfyart uses, or None; a frame with a field of the wrong type is dropped whole (a
    backend that sends junk must not steer a task)."""
    prompt_id = data.get("prompt_id")
    if prompt_id is not None and not isinstance(prompt_id, str):
        return None
    try:
        if kind == "status":
            return StatusEvent(int(data["status"]["exec_info"]["queue_remaining"]))
        if kind == "executing":
            return Executing(prompt_id, _node(data.get("node")))
        if prompt_id is None:
            return None
        if kind == "execution_start":
            return ExecutionStart(prompt_id)
        if kind == "execution_cached":
            nodes = data.get("nodes", [])
            if not isinstance(nodes, list):
                return None
            return ExecutionCached(prompt_id, [str(_node(n)) for n in nodes])
        if kind == "progress":
            value, maximum = float(data["value"]), float(data["max"])
            if not (math.isfinite(value) and math.isfinite(maximum)):
                return None
            return Progress(prompt_id, _node(data.get("node")), value, maximum)
        if kind == "executed":
            node, output = _node(data.get("node")), data.get("output") or {}
            if node is None or not isinstance(output, dict):
                return None
            return Executed(prompt_id, node, output)
        if kind == "execution_success":
            return ExecutionSuccess(prompt_id)
        if kind == "execution_error":
            return ExecutionError(prompt_id, _node(data.get("node_id")), _text(data.get("node_type")),
                                  str(data.get("exception_type", "Exception"))[:200],
                                  str(data.get("exception_message", "")).strip()[:10_000])
        if kind == "execution_interrupted":
            return ExecutionInterrupted(prompt_id, _node(data.get("node_id")), _text(data.get("node_type")))
    except (KeyError, TypeError, ValueError, OverflowError):
        return None
    return None


@dataclass(frozen=True)
class OutputRef:
    node_id: str
    filename: str
    subfolder: str
    type: str


def output_refs(outputs: dict[str, Any]) -> list[OutputRef]:
    """Every downloadable file in a history ``outputs`` object: any list of dicts carrying a ``filename``.
    Temp previews are skipped: they are intermediate, and ComfyUI deletes them on restart."""
    refs: list[OutputRef] = []
    for node_id, node_output in outputs.items():
        if not isinstance(node_output, dict):
            continue
        for items in node_output.values():
            if not isinstance(items, list):
                continue
            for item in items:
                if isinstance(item, dict) and isinstance(item.get("filename"), str):
                    kind = str(item.get("type", "output"))
                    if kind == "temp":
                        continue
                    refs.append(OutputRef(str(node_id), item["filename"], str(item.get("subfolder", "")), kind))
    return refs


@dataclass(frozen=True)
class HistoryOutcome:
    """What /history says of one prompt."""

    finished: bool
    succeeded: bool = False
    error: str | None = None
    outputs: dict[str, Any] = field(default_factory=dict)


def describe_error(node_id: str | None, node_type: str | None, exception_type: str, message: str) -> str:
    where = f"node {node_id} ({node_type})" if node_id else "the prompt"
    return f"{exception_type} in {where}: {message}".strip()


def history_outcome(entry: dict[str, Any] | None) -> HistoryOutcome:
    if not entry:
        return HistoryOutcome(finished=False)
    status = entry.get("status") or {}
    outputs = entry.get("outputs") or {}
    if status.get("completed") or status.get("status_str") == "success":
        return HistoryOutcome(finished=True, succeeded=True, outputs=outputs)
    messages = status.get("messages") or []
    error = f"ComfyUI reported {status.get('status_str', 'an error')}"
    for kind, data in reversed([m for m in messages if isinstance(m, list) and len(m) == 2]):
        if kind == "execution_error" and isinstance(data, dict):
            error = describe_error(data.get("node_id"), data.get("node_type"),
                                   str(data.get("exception_type", "Exception")),
                                   str(data.get("exception_message", "")).strip())
            break
        if kind == "execution_interrupted" and isinstance(data, dict):
            error = f"interrupted at node {data.get('node_id')} ({data.get('node_type')})"
            break
    return HistoryOutcome(finished=True, succeeded=False, error=error, outputs=outputs)


PREVIEW_METHODS = frozenset({"auto", "latent2rgb", "taesd", "none", "default"})


def with_preview_method(extra_data: dict[str, Any] | None, default: str) -> dict[str, Any] | None:
    """A prompt's ``extra_data`` as sent to a backend: its own ``preview_method`` kept (the editor sends the user's
    setting), else ``default``. Newer ComfyUI sends previews only for a prompt that asks, and resets the method on
    every prompt, so one without it gets the server's launch default (usually none). ``default`` "default" sends
    nothing: the backend decides."""
    if (extra_data and "preview_method" in extra_data) or default == "default":
        return extra_data
    return {**(extra_data or {}), "preview_method": default}


DEFAULT_MAX_NODES = 5000


def graph_problem(prompt: Any, max_nodes: int = DEFAULT_MAX_NODES) -> str | None:
    """Why ``prompt`` is not an API-format node graph, or None. ComfyUI checks the rest itself."""
    if not isinstance(prompt, dict):
        return "prompt must be a JSON object mapping node ids to nodes"
    if not prompt:
        return "prompt has no nodes"
    if len(prompt) > max_nodes:
        return f"prompt has {len(prompt)} nodes; at most {max_nodes} are allowed"
    for node_id, node in prompt.items():
        if not isinstance(node, dict):
            return f"node {node_id!r} must be an object with class_type and inputs"
        if not isinstance(node.get("class_type"), str) or not node["class_type"]:
            return f"node {node_id!r} has no class_type"
        if not isinstance(node.get("inputs", {}), dict):
            return f"node {node_id!r}: inputs must be an object"
    return None


def prompt_in_queue(queue: dict[str, Any], prompt_id: str) -> bool:
    """Whether GET /queue lists ``prompt_id`` as running or pending."""
    for key in ("queue_running", "queue_pending"):
        for item in queue.get(key) or []:
            if isinstance(item, list) and len(item) > 1 and item[1] == prompt_id:
                return True
    return False


def prompt_running(queue: dict[str, Any], prompt_id: str) -> bool:
    """Whether GET /queue shows ``prompt_id`` as the prompt running now."""
    return any(isinstance(item, list) and len(item) > 1 and item[1] == prompt_id
               for item in queue.get("queue_running") or [])
