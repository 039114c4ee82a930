"""ComfyUI's jobs API (``/api/jobs``), which the web editor's job panel is built from: a caller's prompts from every
backend (an admin's: every key's), one job, its files, and cancels. The panel asks its two lists at every change of
the queue, so each is read without decoding a whole history: the running and waiting jobs are the open ones, and a
page of finished ones decodes only that page."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from comfyart.api.auth import Caller
from comfyart.api.comfyui.deps import IndexDep, PromptsDep, json_body, page_bounds, sees_everyone
from comfyart.api.comfyui.shapes import JOB_STATUS, job, job_assets
from comfyart.models import FINAL_STATUSES, Task, TaskStatus
from comfyart.store.comfy_index import ComfyIndex, latest_of_each

ACTIVE = frozenset({"pending", "in_progress"})
FINISHED = frozenset(JOB_STATUS[s] for s in FINAL_STATUSES)
BAD_PAGE = "limit and offset must be whole numbers (limit from 1)"


async def jobs(principal: Caller, comfy: IndexDep, status: str | None = None, workflow_id: str | None = None,
               sort_by: str = "created_at", sort_order: str = "desc", limit: str | None = None,
               offset: str = "0") -> Response:
    wanted = set(status.split(",")) if status else set(JOB_STATUS.values())
    if not wanted <= set(JOB_STATUS.values()) or sort_by not in ("created_at", "execution_duration") \
            or sort_order not in ("asc", "desc"):
        return JSONResponse({"error": "status must be pending, in_progress, completed, failed or cancelled; "
                                      "sort_by created_at or execution_duration; sort_order asc or desc"},
                            status_code=400)
    bounds = page_bounds(limit, offset)
    if bounds is None:
        return JSONResponse({"error": BAD_PAGE}, status_code=400)
    count, start = bounds
    newest_first = sort_order == "desc"
    everyone = sees_everyone(principal)
    if sort_by == "created_at" and workflow_id is None and (wanted <= ACTIVE or wanted == FINISHED):
        page, total = await (_open_page(comfy, principal.owner, everyone, wanted, newest_first, start, count)
                             if wanted <= ACTIVE else
                             _finished_page(comfy, principal.owner, everyone, newest_first, start, count))
        return _listing([job(t) for t in page], start, count, total)
    tasks = await comfy.history(owner=principal.owner, everyone=everyone)
    found = [j for j in (job(t) for t in tasks if JOB_STATUS[t.status] in wanted)
             if workflow_id is None or j["workflow_id"] == workflow_id]
    if sort_by == "execution_duration":
        found.sort(key=lambda j: (j["execution_end_time"] or 0) - (j["execution_start_time"] or 0),
                   reverse=newest_first)
    else:
        found.sort(key=lambda j: j["create_time"], reverse=newest_first)
    return _listing(found[start:start + count] if count is not None else found[start:], start, count, len(found))


def _listing(page: list[dict[str, Any]], start: int, count: int | None, total: int) -> JSONResponse:
    return JSONResponse({"jobs": page, "pagination": {"offset": start, "limit": count, "total": total,
                                                      "has_more": start + len(page) < total}})


async def _open_page(comfy: ComfyIndex, owner: str | None, everyone: bool, wanted: set[str], newest_first: bool,
                     start: int, count: int | None) -> tuple[list[Task], int]:
    """Running and waiting jobs: the open prompts, never the history."""
    found = [t for t in await comfy.open(owner, everyone=everyone) if JOB_STATUS[t.status] in wanted]
    found.sort(key=lambda t: (t.created_ms, t.id), reverse=newest_first)
    return (found[start:start + count] if count is not None else found[start:]), len(found)


async def _finished_page(comfy: ComfyIndex, owner: str | None, everyone: bool, newest_first: bool, start: int,
                         count: int | None) -> tuple[list[Task], int]:
    """Finished jobs: the history's task ids less the open ones (no record read), then only the page's records. (An
    admin's page may come out one short where a key gave a prompt id again: its older run is left out.)"""
    history = await comfy.history_ids(owner, everyone=everyone, newest_first=newest_first)
    open_ids = await comfy.open_ids()
    finished = [task_id for task_id in history if task_id not in open_ids]
    wanted = finished[start:start + count] if count is not None else finished[start:]
    page = [t for t in await comfy.tasks.get_many(wanted) if t is not None and t.status in FINAL_STATUSES]
    return (latest_of_each(page) if everyone else page), len(finished)


async def job_one(job_id: str, principal: Caller, comfy: IndexDep) -> Response:
    task = await comfy.task(job_id, principal.owner, everyone=sees_everyone(principal))
    if task is None:
        return JSONResponse({"error": "Job not found"}, status_code=404)
    return JSONResponse(job(task, detail=True))


async def job_assets_page(job_id: str, principal: Caller, comfy: IndexDep, limit: str | None = None,
                          offset: str = "0") -> Response:
    bounds = page_bounds(limit, offset)
    if bounds is None:
        return JSONResponse({"error": BAD_PAGE}, status_code=400)
    task = await comfy.task(job_id, principal.owner, everyone=sees_everyone(principal))
    if task is None:
        return JSONResponse({"error": "Job not found"}, status_code=404)
    return JSONResponse(job_assets(task, bounds[1], bounds[0]))


async def job_cancel(job_id: str, principal: Caller, comfy: IndexDep, prompts: PromptsDep) -> Response:
    task = await comfy.task(job_id, principal.owner, everyone=sees_everyone(principal))
    if task is None:
        return JSONResponse({"error": "Job not found"}, status_code=404)
    cancelled = await prompts.cancel(task, only_if=(TaskStatus.PENDING, TaskStatus.RUNNING))
    return JSONResponse({"cancelled": cancelled})


async def jobs_cancel(request: Request, principal: Caller, comfy: IndexDep, prompts: PromptsDep) -> Response:
    body = await json_body(request)
    ids = body.get("job_ids") if isinstance(body, dict) else None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        return JSONResponse({"error": "job_ids must be a list of job ids"}, status_code=400)
    cancelled = False
    for job_id in ids:
        task = await comfy.task(job_id, principal.owner, everyone=sees_everyone(principal))
        if task is not None:
            cancelled |= await prompts.cancel(task, only_if=(TaskStatus.PENDING, TaskStatus.RUNNING))
    return JSONResponse({"cancelled": cancelled})


# declared with their /api prefix, as ComfyUI declares them (never bare)
JOB_ROUTES: list[tuple[str, str, Callable[..., Any]]] = [
    ("GET", "/api/jobs", jobs), ("GET", "/api/jobs/{job_id}", job_one),
    ("GET", "/api/jobs/{job_id}/assets", job_assets_page),
    ("POST", "/api/jobs/cancel", jobs_cancel), ("POST", "/api/jobs/{job_id}/cancel", job_cancel),
]
