"""Comfy API v2 jobs (API-V2.md §6.1-6.4): submit a graph (``POST /api/v2/jobs``, with an optional
Idempotency-Key), read a job, its workflow, and cancel it. A job is a comfyart task; a client sees its own only
(another's answers 404 ``not_found``, as a missing one). Errors leave in the v2 envelope (``api.v2.answers``).

Decisions: a job is a task marked ``v2`` (kept ``api_v2.job_retention_s`` after its end, then ``expired``:
``policy.retention``, ``sweeps.jobs``), with its ``metadata`` labels, indexed for the list (``store.jobs``) in
the record's own transaction. ``queue_position``: its 1-based place in comfyart's queue (null once dispatched to a
backend, even before it starts there). A cancel of a queued job ends it ``canceled`` at once; of a running one
marks the record (``cancel_asked_ms``: every process shows ``canceling``) and interrupts it on its backend, which
ends it ``canceled`` when the backend reports the interruption (or after the tracker's grace). Links are made under
``server.public_url`` or, without one, the address the request came to."""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from comfyart.api.auth import Caller
from comfyart.api.deps import Services, ServicesDep, VisibleTask, admit
from comfyart.api.requests import TaskSubmission, json_body
from comfyart.api.v2 import shapes
from comfyart.api.v2.answers import V2Refused
from comfyart.api.v2.inputs import resolve_assets
from comfyart.api.v2.submission import Refusal, read_submission
from comfyart.auth import Principal
from comfyart.clock import now_ms
from comfyart.errors import InvalidInput, InvalidTransition, QuotaExceeded
from comfyart.models import NewTask, Task, TaskId, TaskStatus
from comfyart.policy.idempotency import Held, reuse_error, valid_key
from comfyart.store.jobs import JobIndex

router = APIRouter()


def base_url(request: Request, services: Services) -> str:
    return (services.security.public_url or str(request.base_url)).rstrip("/")


async def job_body(task: Task, base: str, services: Services) -> dict[str, Any]:
    """The Job as every v2 answer and event stream shows it: its place in comfyart's queue read while it waits."""
    position = await JobIndex(services.store).queue_position(task.id) if task.status is TaskStatus.PENDING else None
    return shapes.job(task, base_url=base, now_ms=now_ms(), retention_s=services.api_v2.job_retention_s,
                      queue_position=position)


async def job_answer(task: Task, request: Request, services: Services, *, status_code: int = 200) -> JSONResponse:
    body = await job_body(task, base_url(request, services), services)
    headers = {"Location": body["urls"]["self"]} if status_code == 201 else None
    return JSONResponse(body, status_code=status_code, headers=headers)


async def create_once(services: Services, principal: Principal, key: str | None, new: NewTask,
                      max_queued: int) -> Task:
    """Queue ``new``; with an Idempotency-Key, only if this request wins the key (else 422
    ``idempotency_key_reuse``), the key bound to the task in the task's own transaction, and released when the
    task is definitely refused."""
    jobs = JobIndex(services.store)

    async def index(pipe: Any, task_id: TaskId, created_ms: int) -> None:
        jobs.index_in(pipe, task_id, created_ms, new.owner, new.labels or {})

    if key is None:
        return await services.store.create(new, max_queued=max_queued, bind=index)
    store = services.idempotency
    if store is None:
        raise V2Refused("invalid_request", "this server takes no Idempotency-Key")
    claim = await store.claim(principal.owner, key)
    if not claim.won:
        refused = reuse_error(claim.held or Held(job_id=None))
        raise V2Refused(refused["code"], refused["message"], refused["details"])

    async def bind(pipe: Any, task_id: TaskId, created_ms: int) -> None:
        await store.bind_in(pipe, claim, task_id)
        await index(pipe, task_id, created_ms)

    try:
        return await services.store.create(new, max_queued=max_queued, bind=bind)
    except (QuotaExceeded, InvalidInput):
        await store.release(claim)
        raise


@router.post("/api/v2/jobs", status_code=201)
async def submit_job(request: Request, principal: Caller, services: ServicesDep) -> JSONResponse:
    """Queue an API-format graph (``{"workflow": {...}}``) as a job: 201 and the Job, queued."""
    key = request.headers.get("idempotency-key")
    problem = valid_key(key) if key is not None else None
    if problem is not None:
        raise V2Refused("invalid_request", problem)
    limits = services.security.limits
    read = read_submission(await json_body(request, limits), max_nodes=limits.max_graph_nodes)
    if isinstance(read, Refusal):
        raise V2Refused(read.code, read.message, status=read.status)
    resolved = await resolve_assets(services.assets, principal.owner, read.workflow)  # core/ASSET -> file names
    options = TaskSubmission.model_construct(prompt=resolved.workflow, priority=read.priority, params={})
    admission = await admit(services, principal, options, resolved.input_names)  # the rate, then the graph
    new = dataclasses.replace(admission.new_task(options, prompt=resolved.workflow), v2=True, labels=read.metadata)
    task = await create_once(services, principal, key, new, admission.max_queued)
    return await job_answer(task, request, services, status_code=201)


@router.get("/api/v2/jobs/{task_id}", response_model=None)
async def get_job(task: VisibleTask, request: Request, services: ServicesDep) -> JSONResponse:
    return await job_answer(task, request, services)


@router.get("/api/v2/jobs/{task_id}/workflow", response_model=None)
async def get_job_workflow(task: VisibleTask) -> dict[str, Any]:
    """The API-format graph the job runs; never its extra_data."""
    return shapes.workflow_response(task)


@router.post("/api/v2/jobs/{task_id}/cancel", response_model=None)
async def cancel_job(task: VisibleTask, request: Request, services: ServicesDep) -> JSONResponse:
    """Cancel: 200 and the Job, canceled (queued), or canceling while its backend stops it (running); a job that
    already ended, or whose cancel was asked already, answers as it is (a cancel is idempotent)."""
    if task.status is TaskStatus.RUNNING and task.cancel_asked_ms is None:
        await interrupt(services, task.id)
    elif task.status is TaskStatus.PENDING:
        with contextlib.suppress(InvalidTransition):
            await services.tracker.cancel(task.id)
    return await job_answer(await services.store.get(task.id), request, services)


async def interrupt(services: Services, task_id: str) -> None:
    """Mark the running job's cancel asked, then interrupt it on its backend; when this process cannot (its
    backend says it does not run it), it is canceled outright. On a replica that does not lead, the mark is all:
    the leader's tracker hears of it (``tracker.cancels``) and interrupts it, and the job stays ``canceling`` until
    the backend confirms."""
    try:
        await JobIndex(services.store).ask_cancel(task_id, now_ms())
    except InvalidTransition:  # it ended meanwhile
        return
    if not services.tracker.leading():
        return
    if not await services.tracker.interrupt(task_id):
        with contextlib.suppress(InvalidTransition):
            await services.tracker.cancel(task_id)
