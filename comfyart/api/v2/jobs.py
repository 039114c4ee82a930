"""Comfy API v2 jobs (API-V2.md §6.1-6.4): submit a graph (``POST /api/v2/jobs``, with an optional
Idempotency-Key), read a job, its workflow, and cancel it. A job is a comfyart task; a client sees its own only
(another's answers 404 ``not_found``, as a missing one). Errors leave in the v2 envelope (``api.v2.answers``).

Decisions (open for the next routes): the retention is RETENTION_S (no setting yet); ``queue_position`` is not
computed (null); a cancel ends a task ``canceled`` at once in comfyart, so ``canceling`` shows only in the cancel's
own answer while the task still reads running; links are made under ``server.public_url`` or, without one, the
address the request came to."""
from __future__ import annotations

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
from comfyart.models import NewTask, Task, TaskStatus
from comfyart.policy.idempotency import Held, reuse_error, valid_key

RETENTION_S = 7 * 24 * 3600

router = APIRouter()


def base_url(request: Request, services: Services) -> str:
    return (services.security.public_url or str(request.base_url)).rstrip("/")


def job_answer(task: Task, request: Request, services: Services, *, status_code: int = 200,
               canceling: bool = False) -> JSONResponse:
    body = shapes.job(task, base_url=base_url(request, services), now_ms=now_ms(), retention_s=RETENTION_S,
                      canceling=canceling)
    headers = {"Location": body["urls"]["self"]} if status_code == 201 else None
    return JSONResponse(body, status_code=status_code, headers=headers)


async def create_once(services: Services, principal: Principal, key: str | None, new: NewTask,
                      max_queued: int) -> Task:
    """Queue ``new``; with an Idempotency-Key, only if this request wins the key (else 422
    ``idempotency_key_reuse``), the key bound to the task in the task's own transaction, and released when the
    task is definitely refused."""
    if key is None:
        return await services.store.create(new, max_queued=max_queued)
    store = services.idempotency
    if store is None:
        raise V2Refused("invalid_request", "this server takes no Idempotency-Key")
    claim = await store.claim(principal.owner, key)
    if not claim.won:
        refused = reuse_error(claim.held or Held(job_id=None))
        raise V2Refused(refused["code"], refused["message"], refused["details"])

    async def bind(pipe: Any, task_id: str) -> None:
        await store.bind_in(pipe, claim, task_id)

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
    task = await create_once(services, principal, key, admission.new_task(options, prompt=resolved.workflow),
                             admission.max_queued)
    return job_answer(task, request, services, status_code=201)


@router.get("/api/v2/jobs/{task_id}", response_model=None)
async def get_job(task: VisibleTask, request: Request, services: ServicesDep) -> JSONResponse:
    return job_answer(task, request, services)


@router.get("/api/v2/jobs/{task_id}/workflow", response_model=None)
async def get_job_workflow(task: VisibleTask) -> dict[str, Any]:
    """The API-format graph the job runs; never its extra_data."""
    return shapes.workflow_response(task)


@router.post("/api/v2/jobs/{task_id}/cancel", response_model=None)
async def cancel_job(task: VisibleTask, request: Request, services: ServicesDep) -> JSONResponse:
    """Cancel: 200 and the Job, canceled (or canceling while its backend stops it); a job that already ended
    answers as it is (a cancel is idempotent)."""
    try:
        task = await services.tracker.cancel(task.id)
    except InvalidTransition:
        task = await services.store.get(task.id)
    return job_answer(task, request, services, canceling=task.status is TaskStatus.RUNNING)
