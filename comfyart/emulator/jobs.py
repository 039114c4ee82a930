"""The newest server's jobs API (``GET /api/jobs``, ``GET /api/jobs/{id}``) as pure functions of the queue and the
history, in the shapes of Comfy-Org/ComfyUI comfy_execution/jobs.py @172be438 and server.py ``get_jobs`` @002c3fb9:
a job is a queue item (pending, in_progress) or a history entry (completed, failed, cancelled); empty fields are
left out, as its ``prune_dict`` does.
"""
from __future__ import annotations

from typing import Any

PENDING, IN_PROGRESS, COMPLETED, FAILED, CANCELLED = "pending", "in_progress", "completed", "failed", "cancelled"
STATUSES = [PENDING, IN_PROGRESS, COMPLETED, FAILED, CANCELLED]
PREVIEWABLE_MEDIA = frozenset({"images", "video", "audio", "3d", "text"})
_END_EVENTS = ("execution_success", "execution_error", "execution_interrupted")


class JobQueryError(ValueError):
    """A query the server answers with 400 and ``{"error": message}``."""


def _pruned(job: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in job.items() if value is not None}


def _metadata(extra_data: dict[str, Any]) -> tuple[Any, Any]:
    pnginfo = extra_data.get("extra_pnginfo") or {}
    workflow = pnginfo.get("workflow") if isinstance(pnginfo, dict) else None
    return extra_data.get("create_time"), workflow.get("id") if isinstance(workflow, dict) else None


def queue_job(item: list[Any], status: str, *, detail: bool = False) -> dict[str, Any]:
    """A queue item ``[number, id, prompt, extra_data, outputs]`` as a job."""
    number, prompt_id, prompt, extra_data, _ = item
    create_time, workflow_id = _metadata(extra_data)
    job = _pruned({"id": prompt_id, "status": status, "priority": number, "create_time": create_time,
                   "outputs_count": 0, "previewable_outputs_count": 0, "workflow_id": workflow_id})
    if detail:
        job["workflow"] = {"prompt": prompt, "extra_data": extra_data}
    return job


def _outputs_summary(outputs: dict[str, Any]) -> tuple[int, int, dict[str, Any] | None]:
    """(outputs counted, previewable ones, the preview): a saved file first, then any other previewable one."""
    count = previewable = 0
    preview = fallback = None
    for node_id, node_outputs in outputs.items():
        if not isinstance(node_outputs, dict):
            continue
        for media_type, items in node_outputs.items():
            if media_type == "animated" or not isinstance(items, list):
                continue
            for item in items:
                if not isinstance(item, dict):
                    continue  # text values preview only when nothing else does; the emulator's never need to
                count += 1
                if media_type not in PREVIEWABLE_MEDIA:
                    continue
                previewable += 1
                enriched = {**item, "nodeId": node_id, "mediaType": item.get("mediaType", media_type)}
                if preview is None and item.get("type") == "output":
                    preview = enriched
                elif fallback is None:
                    fallback = enriched
    return count, previewable, preview or fallback


def _run_times(messages: list[Any]) -> tuple[Any, Any, Any, bool]:
    start = end = error = None
    interrupted = False
    for entry in messages:
        if not (isinstance(entry, list) and len(entry) >= 2 and isinstance(entry[1], dict)):
            continue
        name, data = entry[0], entry[1]
        if name == "execution_start":
            start = data.get("timestamp")
        elif name in _END_EVENTS:
            end = data.get("timestamp")
            error = data if name == "execution_error" else error
            interrupted = interrupted or name == "execution_interrupted"
    return start, end, error, interrupted


def history_job(prompt_id: str, entry: dict[str, Any], *, detail: bool = False) -> dict[str, Any]:
    """A history entry as a job; ``detail`` adds its outputs, status and workflow (``GET /api/jobs/{id}``)."""
    number, _, prompt, extra_data, _ = entry["prompt"]
    create_time, workflow_id = _metadata(extra_data)
    status_info = entry.get("status") or {}
    start, end, error, interrupted = _run_times(status_info.get("messages", []))
    status = COMPLETED
    if status_info.get("status_str") == "error":
        status = CANCELLED if interrupted else FAILED
    outputs = entry.get("outputs", {})
    count, previewable, preview = _outputs_summary(outputs)
    job = _pruned({"id": prompt_id, "status": status, "priority": number, "create_time": create_time,
                   "execution_start_time": start, "execution_end_time": end, "execution_error": error,
                   "outputs_count": count, "previewable_outputs_count": previewable, "preview_output": preview,
                   "workflow_id": workflow_id})
    if detail:
        job.update({"outputs": outputs, "execution_status": status_info,
                    "workflow": {"prompt": prompt, "extra_data": extra_data}})
    return job


def parse_query(query: dict[str, str]) -> dict[str, Any]:
    """``GET /api/jobs``'s query, checked as server.py checks it; raises JobQueryError."""
    statuses = STATUSES
    if query.get("status"):
        statuses = [s.strip().lower() for s in query["status"].split(",") if s.strip()]
        invalid = [s for s in statuses if s not in STATUSES]
        if invalid:
            raise JobQueryError(f"Invalid status value(s): {', '.join(invalid)}. Valid values: {', '.join(STATUSES)}")
    sort_by, sort_order = query.get("sort_by", "created_at").lower(), query.get("sort_order", "desc").lower()
    if sort_by not in ("created_at", "execution_duration"):
        raise JobQueryError("sort_by must be 'created_at' or 'execution_duration'")
    if sort_order not in ("asc", "desc"):
        raise JobQueryError("sort_order must be 'asc' or 'desc'")
    limit = None
    if "limit" in query:
        try:
            limit = int(query["limit"])
        except ValueError:
            raise JobQueryError("limit must be an integer") from None
        if limit <= 0:
            raise JobQueryError("limit must be a positive integer")
    try:
        offset = max(0, int(query.get("offset", "0")))
    except ValueError:
        raise JobQueryError("offset must be an integer") from None
    return {"statuses": statuses, "workflow_id": query.get("workflow_id"), "sort_by": sort_by,
            "descending": sort_order == "desc", "limit": limit, "offset": offset}


def list_jobs(running: list[list[Any]], pending: list[list[Any]], history: dict[str, dict[str, Any]],
              query: dict[str, Any]) -> dict[str, Any]:
    """The body of ``GET /api/jobs`` for a parsed ``query``."""
    statuses = query["statuses"]
    jobs = [queue_job(item, IN_PROGRESS) for item in running if IN_PROGRESS in statuses]
    jobs += [queue_job(item, PENDING) for item in pending if PENDING in statuses]
    jobs += [job for job in (history_job(pid, entry) for pid, entry in history.items()) if job["status"] in statuses]
    if query["workflow_id"]:
        jobs = [job for job in jobs if job.get("workflow_id") == query["workflow_id"]]

    def key(job: dict[str, Any]) -> Any:
        if query["sort_by"] == "execution_duration":
            start, end = job.get("execution_start_time", 0), job.get("execution_end_time", 0)
            return end - start if start and end else 0
        return job.get("create_time", 0)

    jobs.sort(key=key, reverse=query["descending"])
    total, offset, limit = len(jobs), query["offset"], query["limit"]
    page = jobs[offset:offset + limit] if limit is not None else jobs[offset:]
    return {"jobs": page, "pagination": {"offset": offset, "limit": limit, "total": total,
                                         "has_more": offset + len(page) < total}}


def find_job(prompt_id: str, running: list[list[Any]], pending: list[list[Any]],
             history: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    if prompt_id in history:
        return history_job(prompt_id, history[prompt_id], detail=True)
    for items, status in ((running, IN_PROGRESS), (pending, PENDING)):
        for item in items:
            if item[1] == prompt_id:
                return queue_job(item, status, detail=True)
    return None
