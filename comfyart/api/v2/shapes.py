"""A comfyart task as Comfy API v2 shows it (API-V2.md §4, §5, §6.7): its status among v2's seven, the Job object
(progress, outputs as assets, error, metrics, follow-up links), its workflow, a list item, and the list's opaque
cursors. Pure: the time (``now_ms``), the retention, the public address and what the task record does not hold
(the queue position) come in as arguments; a cancel under way and the labels are the record's (``cancel_asked_ms``,
``labels``), or arguments.

What the SDK checks strictly: every required key present (nullable ones as None), timestamps timezone-aware,
``output.url`` absolute, ``status`` and ``output.type`` from their enums."""
from __future__ import annotations

import base64
import binascii
import datetime
import json
import math
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from comfyart.models import FINAL_STATUSES, OutputFile, Task, TaskStatus
from comfyart.policy import retention
from comfyart.policy.attempts import PROGRESS_DECIMALS

QUEUED, RUNNING, SUCCEEDED, CANCELING, CANCELED, FAILED, EXPIRED = (
    "queued", "running", "succeeded", "canceling", "canceled", "failed", "expired")
STATUSES = (QUEUED, RUNNING, SUCCEEDED, CANCELING, CANCELED, FAILED, EXPIRED)
TERMINAL = frozenset({SUCCEEDED, CANCELED, FAILED, EXPIRED})  # canceling is not: the SDK keeps polling
V2_STATUS = {TaskStatus.PENDING: QUEUED, TaskStatus.RUNNING: RUNNING, TaskStatus.COMPLETED: SUCCEEDED,
             TaskStatus.FAILED: FAILED, TaskStatus.CANCELED: CANCELED}
OUTPUT_TYPES = ("image", "video", "audio", "text", "file", "latent")
NODE_EXECUTION_ERROR, COMFYART_FAILED = "node_execution_error", "comfyart_failed"
# comfy.protocol.describe_error's text: "<exception type> in node <id> (<class>): <message>"
NODE_ERROR = re.compile(r"\S+ in node (?P<node>\S+) \((?P<cls>[^)]*)\): ")
OUTPUT_ID_PREFIX = "o1."


# ---------------------------------------------------------------------------------------------------- status
def expires_at_ms(task: Task, retention_s: int, now_ms: int) -> int:
    """The job's retention deadline (``policy.retention``): its end + ``retention_s``; an estimate until it ends."""
    return retention.expires_at_ms(task, now_ms=now_ms, retention_s=retention_s)


def v2_status(task: Task, *, now_ms: int, retention_s: int, canceling: bool = False) -> str:
    """The v2 status of ``task``: ``expired`` once it ended and its retention deadline is past, or the sweep
    marked it (``policy.retention``); ``canceling`` while it still runs after a v2 cancel was asked (its record's
    ``cancel_asked_ms``, or ``canceling``); otherwise its own status mapped one to one."""
    if retention.is_expired(task, now_ms=now_ms, retention_s=retention_s):
        return EXPIRED
    if (canceling or task.cancel_asked_ms is not None) and task.status is TaskStatus.RUNNING:
        return CANCELING
    return V2_STATUS[task.status]


def iso(ms: int) -> str:
    """Epoch milliseconds as timezone-aware ISO-8601 (``…+00:00``), as the SDK's AwareDatetime requires."""
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC).isoformat(timespec="milliseconds")


def _iso_or_none(ms: int | None) -> str | None:
    return iso(ms) if ms is not None else None


# ---------------------------------------------------------------------------------------------------- outputs
def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _unb64(text: str) -> str:
    """Raises ValueError on anything but unpadded base64url of UTF-8."""
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError("not base64url of UTF-8") from exc


def output_asset_id(task_id: str, filename: str) -> str:
    """The asset id of a task's output: ``o1.<base64url task id>.<base64url file name>``, URL-safe, the same every
    time (a file's name is unique in its task's store). Not a secret and not signed: who may read it is the task's
    visibility, checked by the route."""
    return f"{OUTPUT_ID_PREFIX}{_b64(task_id)}.{_b64(filename)}"


def parse_output_asset_id(asset_id: str) -> tuple[str, str] | None:
    """``(task id, file name)`` of an id ``output_asset_id`` made; None for any other text (an uploaded asset's
    id, or garbage: both are the routes' business)."""
    if not asset_id.startswith(OUTPUT_ID_PREFIX):
        return None
    parts = asset_id[len(OUTPUT_ID_PREFIX):].split(".")
    if len(parts) != 2:
        return None
    try:
        task_id, filename = _unb64(parts[0]), _unb64(parts[1])
    except ValueError:
        return None
    return (task_id, filename) if task_id and filename else None


def output_type(content_type: str, filename: str) -> str:
    """The v2 output type of a stored file, from its content type (a latent by its ``.latent`` name: it has no
    registered type)."""
    major = content_type.split("/", 1)[0].strip().lower()
    if filename.lower().endswith(".latent"):
        return "latent"
    if major in ("image", "video", "audio", "text"):
        return major
    if content_type.split(";", 1)[0].strip().lower() == "application/json":
        return "text"
    return "file"


def asset_content_url(base_url: str, asset_id: str) -> str:
    return f"{base_url.rstrip('/')}/api/v2/assets/{asset_id}/content"


def output(task_id: str, stored: OutputFile, *, base_url: str, expires_ms: int) -> dict[str, Any]:
    """One stored output file as a v2 Output: an asset whose bytes answer at the absolute ``url`` until the job's
    retention deadline. ``hash`` is None: the contract's is blake3 and comfyart keeps a sha256."""
    asset_id = output_asset_id(task_id, stored.filename)
    return {"node_id": stored.node_id, "name": stored.filename,
            "type": output_type(stored.content_type, stored.filename), "content_type": stored.content_type,
            "size_bytes": stored.size, "id": asset_id, "hash": None, "url": asset_content_url(base_url, asset_id),
            "url_expires_at": iso(expires_ms), "job_id": task_id}


# ---------------------------------------------------------------------------------------------------- progress
def _class_of(task: Task, node_id: str | None) -> str | None:
    node = (task.prompt or {}).get(node_id or "")
    kind = node.get("class_type") if isinstance(node, dict) else None
    return kind if isinstance(kind, str) else None


def nodes_total(task: Task) -> int:
    return sum(1 for node in (task.prompt or {}).values() if isinstance(node, dict) and "class_type" in node)


def nodes_done(value: float, total: int) -> int:
    """The nodes done that the fraction ``value`` stands for. The fraction was rounded (``PROGRESS_DECIMALS``), so
    3 of 23 nodes (0.13043...) is kept as 0.1304, which is 2.9992 nodes: up to half a unit of the last decimal,
    times the nodes, is rounding, not a node still running."""
    rounding = 0.5 * 10.0 ** -PROGRESS_DECIMALS
    return min(total, math.floor((value + rounding) * total + 1e-9))


def progress(task: Task, status: str) -> dict[str, Any] | None:
    """The latest progress snapshot, complete in itself; None while queued (and once expired). comfyart keeps the
    fraction done (cached and finished nodes, the running one by its steps), the running node and its steps; the
    nodes done are that fraction of the graph's nodes, short of the running one."""
    if status in (QUEUED, EXPIRED):
        return None
    total = nodes_total(task)
    value = 1.0 if status == SUCCEEDED else max(0.0, min(1.0, task.progress))
    done = nodes_done(value, total)
    if task.node is not None and status != SUCCEEDED:
        done = min(done, max(0, total - 1))
    kind = _class_of(task, task.node)
    step, steps = task.node_step, task.node_max
    message = f"{kind or task.node} {step}/{steps}" if task.node is not None and step is not None and steps else None
    return {"value": value, "nodes_done": done, "nodes_total": total, "current_node": task.node,
            "current_node_class": kind, "step": step, "steps": steps, "message": message}


# ---------------------------------------------------------------------------------------------------- error, metrics
def _traceback(told: Any) -> str | None:
    if isinstance(told, list):
        return "".join(str(line) for line in told) or None
    return told if isinstance(told, str) and told else None


def job_error(task: Task) -> dict[str, Any] | None:
    """Why a failed task failed, as a JobError: ``node_execution_error`` when a node raised (from the backend's
    execution_error when the task kept it, else from comfyart's error text), ``comfyart_failed`` otherwise (no
    backend could run it, retries given up, timed out). None unless the task failed."""
    if task.status is not TaskStatus.FAILED:
        return None
    message = task.error or "the job failed"
    kind, told = (task.comfy_messages or [[None, None]])[-1]
    if kind == "execution_error" and isinstance(told, dict):
        node_id = str(told["node_id"]) if told.get("node_id") is not None else None
        class_type = told.get("node_type") if isinstance(told.get("node_type"), str) else _class_of(task, node_id)
        return {"code": NODE_EXECUTION_ERROR, "message": message, "node_id": node_id, "class_type": class_type,
                "traceback": _traceback(told.get("traceback"))}
    match = NODE_ERROR.match(message)
    if match is not None:
        class_type = match["cls"] if match["cls"] not in ("", "None") else _class_of(task, match["node"])
        return {"code": NODE_EXECUTION_ERROR, "message": message, "node_id": match["node"],
                "class_type": class_type, "traceback": None}
    return {"code": COMFYART_FAILED, "message": message, "node_id": None, "class_type": None, "traceback": None}


def metrics(task: Task) -> dict[str, int | None]:
    """Milliseconds waited in the queue and spent running; None until known."""
    started, finished = task.started_ms, task.finished_ms
    return {"queue_ms": started - task.created_ms if started is not None else None,
            "execution_ms": finished - started if started is not None and finished is not None else None}


# ---------------------------------------------------------------------------------------------------- job
def job_urls(task_id: str, base_url: str) -> dict[str, str]:
    """The job's follow-up links, absolute from ``base_url`` (comfyart's ``server.public_url``, which carries any
    mount prefix): the SDK polls ``self``, streams ``events`` and posts ``cancel`` without building URLs."""
    here = f"{base_url.rstrip('/')}/api/v2/jobs/{quote(task_id, safe='')}"
    return {"self": here, "events": f"{here}/events", "cancel": f"{here}/cancel"}


def job(task: Task, *, base_url: str, now_ms: int, retention_s: int, queue_position: int | None = None,
        canceling: bool = False, metadata: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``task`` as a v2 Job. ``queue_position``: 1-based, shown while queued only; ``canceling``: a cancel was
    asked and not yet confirmed (see ``v2_status``); ``metadata``: the job's labels (default: the record's). An
    expired job shows no outputs: their bytes are gone."""
    status = v2_status(task, now_ms=now_ms, retention_s=retention_s, canceling=canceling)
    expires = expires_at_ms(task, retention_s, now_ms)
    metadata = task.labels if metadata is None else metadata
    outputs = [] if status == EXPIRED else [output(task.id, stored, base_url=base_url, expires_ms=expires)
                                            for stored in task.outputs]
    return {"id": task.id, "status": status, "created_at": iso(task.created_ms),
            "started_at": _iso_or_none(task.started_ms),
            "completed_at": _iso_or_none(task.finished_ms) if task.status in FINAL_STATUSES else None,
            "expires_at": iso(expires), "queue_position": queue_position if status == QUEUED else None,
            "progress": progress(task, status), "outputs": outputs, "error": job_error(task),
            "metrics": metrics(task), "urls": job_urls(task.id, base_url), "metadata": dict(metadata or {}),
            "priority": task.priority}


def workflow_response(task: Task) -> dict[str, Any]:
    """``GET /api/v2/jobs/{id}/workflow``: the API-format graph it runs (none yet for a task queued by workflow
    name and not dispatched: an empty graph); never its extra_data."""
    return {"workflow": task.prompt or {}, "format": "api"}


def list_item(task: Task, *, now_ms: int, retention_s: int, canceling: bool = False,
              metadata: Mapping[str, str] | None = None) -> dict[str, Any]:
    """One job of ``GET /api/v2/jobs`` as the SDK's JobSummary reads it (no outputs, no links)."""
    return {"id": task.id, "status": v2_status(task, now_ms=now_ms, retention_s=retention_s, canceling=canceling),
            "create_time": iso(task.created_ms), "update_time": iso(task.updated_ms),
            "metadata": dict((task.labels if metadata is None else metadata) or {})}


# ---------------------------------------------------------------------------------------------------- cursors
def encode_cursor(created_ms: int, task_id: str) -> str:
    """The opaque cursor after the job (``created_ms``, ``task_id``): the list runs newest first, ties by id
    descending, and the next page starts with the first job strictly after it (see ``after_cursor``)."""
    return _b64(json.dumps([created_ms, task_id], separators=(",", ":")))


def decode_cursor(text: str) -> tuple[int, str]:
    """``(created_ms, task_id)`` of a cursor ``encode_cursor`` made; ValueError for anything else (answered 400
    ``invalid_cursor``)."""
    try:
        value = json.loads(_unb64(text))
    except ValueError as exc:  # json.JSONDecodeError is one
        raise ValueError("not a cursor this server issued") from exc
    if (not isinstance(value, list) or len(value) != 2 or type(value[0]) is not int or value[0] < 0
            or not isinstance(value[1], str) or not value[1]):
        raise ValueError("not a cursor this server issued")
    return value[0], value[1]


def after_cursor(created_ms: int, task_id: str, cursor: tuple[int, str]) -> bool:
    """Whether a job comes after ``cursor`` in the list's order (newest first, then id descending)."""
    return (created_ms, task_id) < cursor
