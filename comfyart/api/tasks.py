"""``/api/tasks``: submit, list, read, cancel and retry tasks, and read their outputs (by key or by a signed link).
A client sees its own tasks only: another's answers 404, as if it did not exist."""
from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse

from comfyart.api.auth import Caller, Unauthenticated
from comfyart.api.deps import ServicesDep, VisibleTask, admit, visible_task
from comfyart.api.errors import BadRequest
from comfyart.api.requests import MAX_OFFSET, Scheduling, TaskSubmission, body_doc
from comfyart.auth import can_see, output_path, signature_valid
from comfyart.errors import InvalidTransition, NotFound
from comfyart.models import FINAL_STATUSES, Task, TaskStatus

router = APIRouter()


def created(task: Task) -> JSONResponse:
    """The answer to a new task: 201, where it is, and what it runs."""
    body: dict[str, Any] = {"id": task.id, "status": task.status.value}
    if task.priority:
        body["priority"] = task.priority
    if task.workflow is not None:
        body.update(workflow=task.workflow, workflow_version=task.workflow_version, params=task.params)
    return JSONResponse(body, status_code=201, headers={"Location": f"/api/tasks/{task.id}"})


@router.post("/api/tasks", status_code=201, openapi_extra=body_doc(TaskSubmission))
async def submit_task(request: Request, principal: Caller, services: ServicesDep) -> JSONResponse:
    """Queue a raw API-format graph (``{"prompt": {...}}``) or a run of a stored workflow
    (``{"workflow": NAME, "params": {...}}``)."""
    body = await TaskSubmission.read(request, services.security.limits)
    admission = await admit(services, principal, body)
    if body.workflow is not None:
        return created(await services.resolver.submit(
            body.workflow, body.params, task=admission.new_task(body), max_queued=admission.max_queued,
            may_read=lambda earlier: can_see(principal, earlier.owner), object_info=admission.object_info))
    return created(await services.store.create(admission.new_task(body, prompt=body.prompt),
                                               max_queued=admission.max_queued))


@router.get("/api/tasks", response_model=None)
async def list_tasks(principal: Caller, services: ServicesDep, status: TaskStatus | None = None,
                     limit: int = Query(50, ge=1, le=500),
                     offset: int = Query(0, ge=0, le=MAX_OFFSET)) -> dict[str, Any]:
    """Newest first (pending ones in the order they will run). A client sees its own tasks only."""
    owner = None if principal.admin else principal.id
    tasks = await services.store.page(status=status, limit=limit, offset=offset, owner=owner)
    return {"tasks": [t.model_dump(exclude={"prompt"}) for t in tasks],
            "total": await services.store.count(status, owner=owner), "limit": limit, "offset": offset}


@router.get("/api/tasks/{task_id}", response_model=None)
async def get_task(task: VisibleTask) -> dict[str, Any]:
    return task.model_dump()


@router.delete("/api/tasks/{task_id}", response_model=None)
async def cancel_task(task: VisibleTask, services: ServicesDep) -> dict[str, Any]:
    """Cancel: a queued task leaves the queue, a running one is interrupted on its backend. A task that
    already ended answers 409."""
    try:
        return (await services.tracker.cancel(task.id)).model_dump(exclude={"prompt"})
    except InvalidTransition:
        ended = await services.store.get(task.id)
        raise BadRequest(409, f"task {task.id} is already {ended.status.value}") from None


@router.post("/api/tasks/{task_id}/retry", status_code=201)
async def retry_task(task: VisibleTask, principal: Caller, services: ServicesDep) -> JSONResponse:
    """Queue an ended task again as a new task (``retry_of`` names the old one): the same graph, or the same
    workflow version and parameters (the seed it used included), with its priority, tags and webhook. A task
    that has not ended answers 409."""
    if task.status not in FINAL_STATUSES:
        raise BadRequest(409, f"task {task.id} is still {task.status.value}: cancel it first, or wait for its end")
    # what the task was queued with, checked then: not checked again
    options = Scheduling.model_construct(priority=task.priority, requires=task.requires, vram_mb=task.vram_mb,
                                         webhook=task.webhook)
    admission = await admit(services, principal, options)
    if task.workflow is not None and task.workflow_version is not None \
            and await services.workflows.has_version(task.workflow, task.workflow_version):
        new = admission.new_task(options, workflow=task.workflow, workflow_version=task.workflow_version,
                                 params=task.params, retry_of=task.id)
    elif task.prompt is not None:  # a raw graph, or a workflow's resolved graph whose version is gone
        new = admission.new_task(options, prompt=task.prompt, retry_of=task.id)
    else:
        raise BadRequest(409, f"task {task.id} cannot run again: workflow {task.workflow} version "
                              f"{task.workflow_version} was deleted before the task was dispatched")
    return created(await services.store.create(new, max_queued=admission.max_queued))


@router.post("/api/tasks/{task_id}/outputs/{filename}/link", response_model=None)
async def share_output(task: VisibleTask, filename: str, request: Request, services: ServicesDep,
                       expires_in_s: int | None = Query(None, ge=60, le=30 * 24 * 3600)) -> dict[str, Any]:
    """A URL of the output that needs no key until it expires (default ``auth.signed_url_ttl_s``)."""
    if not any(o.filename == filename for o in task.outputs):
        raise NotFound(f"task {task.id} has no output {filename}")
    security = services.security
    base = security.public_url or str(request.base_url).rstrip("/")
    url, expires = security.output_url(base, task.id, filename, expires_in_s)
    return {"url": url, "expires": expires}


@router.get("/api/tasks/{task_id}/outputs/{filename}", response_model=None)
async def get_output(task_id: str, filename: str, request: Request,
                     services: ServicesDep) -> FileResponse | RedirectResponse:
    """The file; with ``expires`` and ``signature`` (from ``…/link``, or a webhook) no key is needed."""
    principal = request.scope.get("state", {}).get("principal")
    if principal is None:  # let in without credentials only for a signed URL: check it
        query = request.query_params
        if not signature_valid(services.security.url_secret, output_path(task_id, filename), query.get("expires"),
                               query.get("signature"), time.time()):
            raise Unauthenticated("this link is invalid or has expired")
        task = await services.store.get(task_id)
    else:
        task = await visible_task(task_id, principal, services)
    record = next((o for o in task.outputs if o.filename == filename), None)
    if record is not None and record.bucket is not None and services.objects is not None:
        return RedirectResponse(await services.objects.presign(record.path), status_code=307)
    path = services.outputs.find(task_id, filename) if record is not None else None
    if record is None or path is None:
        raise NotFound(f"task {task_id} has no output {filename}")
    return FileResponse(path, media_type=record.content_type, filename=filename)
