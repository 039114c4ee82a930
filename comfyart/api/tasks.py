"""``/api/tasks``: submit, list, read, cancel and retry tasks, and read their outputs (by key or by a signed link).
A client sees its own tasks only: another's answers 404, as if it did not exist."""
from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse

from comfyart.api.auth import Caller, Unauthenticated
from comfyart.api.deps import Services, ServicesDep, VisibleTask, admit, visible_task
from comfyart.api.errors import BadRequest
from comfyart.api.requests import MAX_OFFSET, Scheduling, TaskSubmission, body_doc
from comfyart.api.routing import get_and_head
from comfyart.auth import can_see, output_path, signature_valid
from comfyart.comfy.texts import prompt_text
from comfyart.errors import InvalidTransition, NotFound
from comfyart.models import FINAL_STATUSES, OutputFile, Task, TaskStatus
from comfyart.store.tasks import TaskStore

MAX_WAIT_S = 300  # ?wait= on an output: long enough for a run, short of proxies' idle timeouts
RECHECK_S = 5.0  # while waiting, read the record again this often (and notice a client that left)

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
            may_read=lambda earlier: can_see(principal, earlier.owner), fleet=admission.fleet))
    return created(await services.store.create(admission.new_task(body, prompt=body.prompt),
                                               max_queued=admission.max_queued))


@router.get("/api/tasks", response_model=None)
async def list_tasks(principal: Caller, services: ServicesDep, status: TaskStatus | None = None,
                     limit: int = Query(50, ge=1, le=500),
                     offset: int = Query(0, ge=0, le=MAX_OFFSET)) -> dict[str, Any]:
    """Newest first (pending ones in the order they will run). A client sees its own tasks only."""
    owner = None if principal.admin else principal.id
    tasks = await services.store.page(status=status, limit=limit, offset=offset, owner=owner)
    # the graph stays out (it can be large); the words it draws come in, to tell the tasks apart
    return {"tasks": [{**t.model_dump(exclude={"prompt"}), "prompt_text": prompt_text(t.params, t.prompt)}
                      for t in tasks],
            "total": await services.store.count(status, owner=owner), "limit": limit, "offset": offset}


@router.get("/api/tasks/{task_id}", response_model=None)
async def get_task(task: VisibleTask) -> dict[str, Any]:
    return {**task.model_dump(), "prompt_text": prompt_text(task.params, task.prompt)}


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


@get_and_head(router, "/api/tasks/{task_id}/outputs/{filename}", response_model=None)
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
    if record is None:
        raise NotFound(f"task {task_id} has no output {filename}")
    return await serve_output(task_id, record, services)


@get_and_head(router, "/api/tasks/{task_id}/output", response_model=None)
async def get_first_output(task: VisibleTask, request: Request, services: ServicesDep,
                           wait: float = Query(0, ge=0, le=MAX_WAIT_S, description="seconds to wait for the task "
                                                                                   "to end first")
                           ) -> FileResponse | RedirectResponse:
    """The task's first output, as ``…/outputs/{its name}`` answers it (``curl -fOJ`` saves it under that name). A
    task that has not completed answers 409 naming its status; with ``wait``, once it ends or that many seconds
    have passed."""
    if wait and task.status not in FINAL_STATUSES:
        task = await ended(services.store, task.id, wait, request)
    if task.status is not TaskStatus.COMPLETED:
        raise BadRequest(409, not_completed(task, wait))
    if not task.outputs:
        raise NotFound(f"task {task.id} completed with no output")
    return await serve_output(task.id, task.outputs[0], services)


def not_completed(task: Task, waited_s: float) -> str:
    """Why a task has no output to give yet (or ever)."""
    if task.status in FINAL_STATUSES:
        return f"task {task.id} is {task.status.value}: it has no output"
    after = f" after waiting {waited_s:g} s" if waited_s else ""
    return f"task {task.id} is still {task.status.value}{after}: add ?wait=SECONDS (up to {MAX_WAIT_S}) to wait for it"


async def serve_output(task_id: str, record: OutputFile, services: Services) -> FileResponse | RedirectResponse:
    """One output: the stored file (``Content-Disposition: attachment`` with its name; ranges, HEAD), or with
    object storage a redirect to a fresh presigned URL."""
    if record.bucket is not None and services.objects is not None:
        return RedirectResponse(await services.objects.presign(record.path), status_code=307)
    path = await services.outputs.locate(task_id, record.filename, record.replica)
    if path is None:
        raise NotFound(f"task {task_id} has no output {record.filename}")
    return FileResponse(path, media_type=record.content_type, filename=record.filename)


async def ended(store: TaskStore, task_id: str, timeout_s: float, request: Request) -> Task:
    """The task once it reaches a final status, or as it is after ``timeout_s`` (or once the client has gone).
    Woken by the task's final event; the record is read again every RECHECK_S all the same, so a missed event
    (the subscription cut off) costs a few seconds, not the whole wait."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    with store.events.subscribe(lambda e: e.get("type") == "task" and e.get("id") == task_id
                                and e.get("status") in FINAL_STATUSES) as final:
        while True:  # subscribed before reading: an end between the two is not missed
            task = await store.get(task_id)
            left = deadline - loop.time()
            if task.status in FINAL_STATUSES or left <= 0 or await request.is_disconnected():
                return task
            if final.closed:
                await asyncio.sleep(min(left, RECHECK_S))
            else:
                await final.get(min(left, RECHECK_S))
