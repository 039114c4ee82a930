"""ComfyUI's answer shapes, as pure functions of comfyart's records: output files named into their task's subfolder,
backend frames rewritten for their client, queue items, history entries, jobs, and how a prompt ended."""
from __future__ import annotations

import datetime
import json
import mimetypes
import struct
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

from comfyart.models import FINAL_STATUSES, OutputFile, Relay, Task, TaskStatus

FEATURES = {"supports_preview_metadata": True, "max_upload_size": 64 << 20}
JOB_STATUS = {TaskStatus.PENDING: "pending", TaskStatus.RUNNING: "in_progress", TaskStatus.COMPLETED: "completed",
              TaskStatus.FAILED: "failed", TaskStatus.CANCELED: "cancelled"}
PREVIEW_IMAGE, PREVIEW_WITH_METADATA = 1, 4


# ---------------------------------------------------------------------------------------------------- naming
def public_subfolder(task_id: str, subfolder: str) -> str:
    return f"{task_id}/{subfolder}" if subfolder else task_id


def _stored_match(stored: Sequence[OutputFile], node_id: str, ref: dict[str, Any]) -> OutputFile | None:
    name, subfolder = ref.get("filename"), ref.get("subfolder") or ""
    for output in stored:
        if (output.node_id == node_id and output.subfolder == subfolder
                and output.filename in (name, f"{node_id}_{name}")):
            return output
    return None


def public_outputs(task: Task, outputs: dict[str, Any] | None) -> dict[str, Any]:
    """A prompt's UI outputs as its client sees them: every file renamed into the task's subfolder (and to the
    name comfyart stored it under); everything else (text, flags) as the backend gave it."""
    if outputs is None:  # not recorded (a task queued through comfyart's own API): its stored files
        outputs = {}
        for output in task.outputs:
            outputs.setdefault(output.node_id, {}).setdefault("images", []).append(
                {"filename": output.filename, "subfolder": output.subfolder, "type": output.type})
    return {node_id: public_node_output(task.id, task.outputs, node_id, node_output)
            for node_id, node_output in outputs.items() if isinstance(node_output, dict)}


def public_node_output(task_id: str, stored: Sequence[OutputFile], node_id: str,
                       node_output: dict[str, Any]) -> dict[str, Any]:
    """One node's UI output for its client: each file in the task's subfolder, under the name ``stored`` has it
    by (a file not stored yet keeps the backend's name)."""
    shown: dict[str, Any] = {}
    for key, value in node_output.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) and "filename" in v for v in value):
            files = []
            for ref in value:
                match = _stored_match(stored, node_id, ref)
                files.append({**ref, "filename": match.filename if match else ref["filename"],
                              "subfolder": public_subfolder(task_id, ref.get("subfolder") or ""),
                              "type": ref.get("type", "output")})
            shown[key] = files
        else:
            shown[key] = value
    return shown


def rewrite_frame(relay: Relay, kind: str, data: dict[str, Any]) -> dict[str, Any]:
    """A backend's frame for its client: comfyart's prompt id replaced by the client's, output files renamed."""
    data = {**data, "prompt_id": relay.comfy_prompt_id}
    if kind == "progress_state" and isinstance(data.get("nodes"), dict):
        data["nodes"] = {k: {**v, "prompt_id": relay.comfy_prompt_id} if isinstance(v, dict) else v
                         for k, v in data["nodes"].items()}
    elif kind == "executed" and isinstance(data.get("output"), dict):
        data["output"] = public_node_output(relay.task_id, (), str(data.get("node")), data["output"])
    return data


def with_metadata(payload: bytes, relay: Relay, node: str | None) -> bytes:
    """A type-1 preview (what backends send comfyart) as type 4, for a client that negotiated preview metadata."""
    if len(payload) < 8 or struct.unpack(">I", payload[:4])[0] != PREVIEW_IMAGE:
        return payload
    image_type = "image/png" if struct.unpack(">I", payload[4:8])[0] == 2 else "image/jpeg"
    metadata = json.dumps({"node_id": node, "prompt_id": relay.comfy_prompt_id, "display_node_id": node,
                           "parent_node_id": None, "real_node_id": node, "image_type": image_type}).encode()
    return struct.pack(">II", PREVIEW_WITH_METADATA, len(metadata)) + metadata + payload[8:]


# ---------------------------------------------------------------------------------------------------- records
def _timestamp(ms: int | None) -> int:
    return ms if ms is not None else int(time.time() * 1000)


def terminal_message(task: Task) -> tuple[str, dict[str, Any]]:
    """How a final task's prompt ended, as ComfyUI reports it: execution_success, the backend's own
    execution_error / execution_interrupted, or one made up from comfyart's error when the backend sent none."""
    prompt_id = task.comfy_prompt_id
    when = _timestamp(task.finished_ms)
    if task.status is TaskStatus.COMPLETED:
        return "execution_success", {"prompt_id": prompt_id, "timestamp": when}
    last = (task.comfy_messages or [[None, None]])[-1]
    if last[0] in ("execution_error", "execution_interrupted") and isinstance(last[1], dict):
        return last[0], {**last[1], "prompt_id": prompt_id}
    if task.status is TaskStatus.CANCELED:
        return "execution_interrupted", {"prompt_id": prompt_id, "node_id": task.node, "node_type": None,
                                         "executed": [], "timestamp": when}
    return "execution_error", {"prompt_id": prompt_id, "node_id": task.node, "node_type": None, "executed": [],
                               "exception_message": task.error or "failed", "exception_type": "comfyart.TaskFailed",
                               "traceback": [], "current_inputs": {}, "current_outputs": [], "timestamp": when}


def queue_item(task: Task, outputs_to_execute: list[str]) -> list[Any]:
    return [_number(task), task.comfy_prompt_id, task.prompt or {}, task.extra_data or {}, outputs_to_execute]


def _number(task: Task) -> float:
    """Its queue number as ComfyUI writes it: a whole one (its own count) as an integer."""
    number = task.number if task.number is not None else 0
    return int(number) if float(number).is_integer() else number


def in_history(task: Task) -> bool:
    """Whether ComfyUI would keep the prompt in its history: it ran and ended. One deleted from the queue never
    gets there."""
    return task.status in FINAL_STATUSES and not (task.status is TaskStatus.CANCELED and task.started_ms is None)


def history_entry(task: Task, outputs_to_execute: list[str]) -> dict[str, Any]:
    prompt_id = task.comfy_prompt_id
    started = _timestamp(task.started_ms or task.finished_ms)
    # the backend's own messages when it sent them; the end is comfyart's, which may differ (canceled)
    messages: list[Any] = [[kind, {**data, "prompt_id": prompt_id}] for kind, data in task.comfy_messages or []
                           if kind in ("execution_start", "execution_cached") and isinstance(data, dict)]
    if not messages and task.started_ms is not None:
        messages += [["execution_start", {"prompt_id": prompt_id, "timestamp": started}],
                     ["execution_cached", {"nodes": [], "prompt_id": prompt_id, "timestamp": started}]]
    messages.append(list(terminal_message(task)))
    completed = task.status is TaskStatus.COMPLETED
    outputs = public_outputs(task, task.comfy_outputs)
    return {"prompt": queue_item(task, outputs_to_execute), "outputs": outputs,
            "status": {"status_str": "success" if completed else "error", "completed": completed,
                       "messages": messages},
            "meta": {n: {"node_id": n, "display_node": n, "parent_node": None, "real_node_id": n} for n in outputs}}


def job(task: Task, *, detail: bool = False) -> dict[str, Any]:
    """The newer ComfyUI jobs API's view of a task (PROTOCOL.md §6)."""
    outputs = public_outputs(task, task.comfy_outputs) if task.status is TaskStatus.COMPLETED else {}
    files = [dict(f, nodeId=n, mediaType=k) for n, o in outputs.items() for k, v in o.items()
             if isinstance(v, list) for f in v if isinstance(f, dict) and "filename" in f]
    previewable = [f for f in files if str(f["filename"]).lower().endswith((".png", ".jpg", ".jpeg", ".webp", ".gif",
                                                                             ".mp4", ".webm"))]
    workflow = ((task.extra_data or {}).get("extra_pnginfo") or {}).get("workflow")
    error = None
    if task.status in (TaskStatus.FAILED, TaskStatus.CANCELED):
        kind, told = terminal_message(task)
        error = told if kind == "execution_error" else None  # an interrupted one is only "cancelled"
    body = {"id": task.comfy_prompt_id, "status": JOB_STATUS[task.status], "priority": _number(task),
            "create_time": task.created_ms, "execution_start_time": task.started_ms,
            "execution_end_time": task.finished_ms, "execution_error": error, "outputs_count": len(files),
            "previewable_outputs_count": len(previewable), "preview_output": previewable[0] if previewable else None,
            "workflow_id": workflow.get("id") if isinstance(workflow, dict) else None}
    body = {key: value for key, value in body.items() if value is not None}  # as ComfyUI's prune_dict
    if detail:
        status = history_entry(task, [])["status"] if in_history(task) else {
            "status_str": "success" if task.status is TaskStatus.COMPLETED else "error",
            "completed": task.status is TaskStatus.COMPLETED}
        body.update(outputs=outputs, execution_status=status,
                    workflow={"prompt": task.prompt or {}, "extra_data": task.extra_data or {}})
    return body


def job_assets(task: Task, offset: int, limit: int | None) -> dict[str, Any]:
    """``GET /api/jobs/{id}/assets``: a page of the task's output files, each with its link through ``/api/view``,
    and the size and type comfyart stored it with (a file not stored yet has neither)."""
    created = _iso(task.finished_ms or task.created_ms)
    assets = []
    for node_id, node_output in public_outputs(task, task.comfy_outputs).items():
        refs = [(key, ref) for key, value in node_output.items() if isinstance(value, list)
                for ref in value if isinstance(ref, dict) and "filename" in ref]
        for index, (key, ref) in enumerate(refs):
            name = str(ref["filename"])
            subfolder = str(ref.get("subfolder") or "")
            stored = next((o for o in task.outputs if o.node_id == node_id and o.filename == name
                           and public_subfolder(task.id, o.subfolder) == subfolder), None)
            query = urlencode({"filename": name, "subfolder": subfolder, "type": ref.get("type", "output")})
            assets.append({"id": f"{task.id}-{node_id}-{index}", "name": name, "preview_url": f"/api/view?{query}",
                           "mime_type": stored.content_type if stored else mimetypes.guess_type(name)[0],
                           "size": stored.size if stored else None, "node_id": node_id, "output_key": key,
                           "output_index": index, "created_at": created})
    page = assets[offset:offset + limit] if limit is not None else assets[offset:]
    return {"job_id": task.comfy_prompt_id, "assets": page,
            "pagination": {"offset": offset, "limit": limit, "total": len(assets),
                           "has_more": offset + len(page) < len(assets)}}


def _iso(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")
