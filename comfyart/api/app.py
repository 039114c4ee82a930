"""The REST API: tasks, their outputs, workflows and input uploads, the pool, API keys, and a health check.
``create_app`` takes its services; there are no module globals. Every error leaves as a 4xx/5xx with a one-line
``detail``, never a stack trace.

Who may do what: the auth middleware names the caller (a Principal); routes that change the pool, the scheduler,
workflows or keys take the ``admin_only`` dependency, and every route about tasks shows a client its own only
(another's task answers 404, as if it did not exist).
"""
from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from comfyart import __version__
from comfyart.api.auth import AuthMiddleware, Caller, Unauthenticated, admin_only
from comfyart.api.comfyui.front import FrontDoor
from comfyart.api.comfyui.routes import build_router
from comfyart.api.events import add_event_routes
from comfyart.api.limits import BodyLimit, BodyTooLarge, JSONTooDeep, parse_json
from comfyart.api.security import Security
from comfyart.auth import Principal, Role, can_see, output_path, signature_valid
from comfyart.comfy.protocol import graph_problem
from comfyart.config.fleet import TAG_PATTERN, StaticBackendConfig
from comfyart.config.sections import SchedulerConfig
from comfyart.config.settings import describe_validation_error
from comfyart.dispatcher import Dispatcher
from comfyart.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    InvalidTransition,
    NotFound,
    QuotaExceeded,
    StateConflict,
    TransientError,
)
from comfyart.files.inputs import InputStore, NotAnImage, StoredInput, TooLarge
from comfyart.files.objects import S3Outputs
from comfyart.files.outputs import OutputStore
from comfyart.metrics import Metrics
from comfyart.models import FINAL_STATUSES, NewTask, Task, TaskStatus
from comfyart.policy.priority import parse_priority
from comfyart.pool.controls import PoolControls
from comfyart.pool.registry import Pool
from comfyart.stats import StatsHistory
from comfyart.store.queue import TaskQueue
from comfyart.store.tasks import TaskStore
from comfyart.store.workflows import WorkflowStore
from comfyart.tracker.tracker import Tracker
from comfyart.webhooks import literal_target_problem
from comfyart.workflows.definition import (
    WorkflowDefinition,
    definition_problems,
    infer_parameters,
    workflow_name_problem,
)
from comfyart.workflows.parameters import ParameterError
from comfyart.workflows.resolve import Resolver

BACKEND_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
MAX_FORM_FILES = 16
TAG = re.compile(TAG_PATTERN)
SCHEDULING_FIELDS = {"priority", "requires", "vram_mb", "webhook"}
MAX_WEBHOOK_URL = 2048
UPLOAD_CHUNK = 1 << 20
DASHBOARD_DIR = Path(__file__).parents[1] / "dashboard"
MAX_OFFSET = 1_000_000_000  # Redis takes 64-bit offsets, not any integer a query can spell


@dataclass
class Services:
    store: TaskStore
    queue: TaskQueue
    pool: Pool
    controls: PoolControls
    outputs: OutputStore
    workflows: WorkflowStore
    resolver: Resolver
    inputs: InputStore
    tracker: Tracker
    dispatcher: Dispatcher
    front: FrontDoor
    workflow_file_errors: list[str] = field(default_factory=list)
    objects: S3Outputs | None = None
    security: Security = field(default_factory=Security)
    metrics: Metrics | None = None
    stats: StatsHistory | None = None
    dashboard: bool = True


def _new_task(options: dict[str, Any], admission: dict[str, Any], **what: Any) -> tuple[NewTask, int]:
    """The task a request queues (its scheduling ``options``, its ``admission``, and ``what`` it runs), and how
    many unfinished tasks its owner may have (0: no limit)."""
    fields = {**options, **{k: v for k, v in admission.items() if k != "max_queued"}, **what}
    return NewTask(**fields), int(admission.get("max_queued", 0))


def _problem(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _one_line(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("query", "path", "body"))
        parts.append(f"{where}: {error.get('msg')}" if where else str(error.get("msg")))
    return "; ".join(parts)


# errors of the domain that a request can cause, and how each answers; the message is already one line
ERROR_STATUS: dict[type, int] = {NotFound: 404, ParameterError: 422, InvalidInput: 422, Conflict: 412,
                                 StateConflict: 409, InvalidTransition: 409, Forbidden: 403, BodyTooLarge: 413}


def _answer_with(status: int) -> Any:
    async def answer(request: Request, exc: Exception) -> JSONResponse:
        return _problem(status, str(exc))

    return answer


class BadRequest(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


async def _json_body(request: Request) -> Any:
    try:
        return parse_json(await request.body(), request.app.state.limits.max_json_depth)
    except JSONTooDeep as exc:
        raise BadRequest(422, str(exc)) from None
    except ValueError:
        raise BadRequest(400, "body is not valid JSON") from None


def _object(body: Any, allowed: set, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest(422, f"body must be a JSON object with {what}")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadRequest(422, f"unknown field(s): {', '.join(unknown)}")
    return body


def _params(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(422, "params must be a JSON object mapping parameter names to values")
    return value


def _scheduling(body: dict[str, Any]) -> dict[str, Any]:
    """``priority``, ``requires`` and ``vram_mb`` of a task request, checked; absent ones are left out."""
    options: dict[str, Any] = {}
    if body.get("priority") is not None:
        try:
            options["priority"] = parse_priority(body["priority"])
        except ValueError as exc:
            raise BadRequest(422, f"priority: {exc}") from None
    requires = body.get("requires")
    if requires is not None:
        if not isinstance(requires, list) or not all(isinstance(t, str) and TAG.match(t) for t in requires):
            raise BadRequest(422, "requires: a list of tags (letters, digits, '.', '_', ':', '/', '-'; up to 64)")
        options["requires"] = requires
    vram_mb = body.get("vram_mb")
    if vram_mb is not None:
        if not isinstance(vram_mb, int) or isinstance(vram_mb, bool) or not 1 <= vram_mb <= 1 << 24:
            raise BadRequest(422, "vram_mb: a whole number of MiB from 1")
        options["vram_mb"] = vram_mb
    webhook = body.get("webhook")
    if webhook is not None:
        problem = webhook_problem(webhook)
        if problem is not None:
            raise BadRequest(422, f"webhook: {problem}")
        options["webhook"] = webhook
    return options


def webhook_problem(url: Any) -> str | None:
    if not isinstance(url, str) or len(url) > MAX_WEBHOOK_URL:
        return f"an http(s) URL of at most {MAX_WEBHOOK_URL} characters"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "an http(s) URL with a host"
    return None


async def _chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(UPLOAD_CHUNK):
        yield chunk


async def _store_upload(inputs: InputStore, upload: UploadFile, label: str) -> StoredInput:
    try:
        return await inputs.add(_chunks(upload))
    except NotAnImage as exc:
        raise BadRequest(415, f"{label}: {exc}") from None
    except TooLarge as exc:
        raise BadRequest(413, f"{label}: {exc}") from None


async def _run_request(request: Request, inputs: InputStore,
                       ) -> tuple[dict[str, Any], dict[str, StoredInput], dict[str, Any]]:
    """A run's parameters, uploaded files and scheduling options: JSON ``{"params": {...}, "priority": ...}``, or a
    form (multipart/form-data, or url-encoded when it has no files) with a ``params`` field holding that JSON
    object, one file per image parameter named after it, and optionally ``priority``."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        body = _object(await _json_body(request) if await request.body() else {}, {"params", *SCHEDULING_FIELDS},
                       "a 'params' field")
        return _params(body.get("params")), {}, _scheduling(body)
    params: dict[str, Any] = {}
    options: dict[str, Any] = {}
    files: dict[str, StoredInput] = {}
    async with request.form(max_files=MAX_FORM_FILES, max_fields=MAX_FORM_FILES) as form:
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                if key in files:
                    raise BadRequest(422, f"params.{key}: more than one file")
                files[key] = await _store_upload(inputs, value, f"params.{key}")
            elif key == "params":
                try:
                    params = _params(parse_json(value, request.app.state.limits.max_json_depth))
                except JSONTooDeep as exc:
                    raise BadRequest(422, f"params: {exc}") from None
                except ValueError:
                    raise BadRequest(400, "the 'params' form field is not valid JSON") from None
            elif key == "priority":
                options.update(_scheduling({"priority": int(value) if value.lstrip("-").isdigit() else value}))
            elif key == "webhook":
                options.update(_scheduling({"webhook": value}))
            else:
                raise BadRequest(422, f"unknown form field {key!r}: send 'params' (JSON), image files, priority, "
                                      f"webhook")
    return params, files, options


def _etag_version(header: str | None) -> int | None:
    if header is None:
        return None
    value = header.strip().removeprefix("W/").strip('"')
    if not value.isdigit():
        raise BadRequest(400, "If-Match must be a workflow version, as its ETag gives it")
    return int(value)


def _created(task: Task) -> JSONResponse:
    body: dict[str, Any] = {"id": task.id, "status": task.status.value}
    if task.priority:
        body["priority"] = task.priority
    if task.workflow is not None:
        body.update(workflow=task.workflow, workflow_version=task.workflow_version, params=task.params)
    return JSONResponse(body, status_code=201, headers={"Location": f"/api/tasks/{task.id}"})


def create_app(services: Services) -> FastAPI:
    app = FastAPI(title="comfyart", version=__version__,
                  description="Elastic scheduler for fleets of ComfyUI backends")
    store, queue, pool, controls, outputs = (services.store, services.queue, services.pool, services.controls,
                                             services.outputs)
    workflows, resolver, inputs = services.workflows, services.resolver, services.inputs
    security = services.security
    app.state.limits = security.limits
    # outermost first: a body over its limit is refused before anyone is asked who sent it
    app.add_middleware(AuthMiddleware, authenticator=security.authenticator)
    app.add_middleware(BodyLimit, limits=security.limits)
    admin = [Depends(admin_only)]

    async def visible_task(task_id: str, principal: Principal) -> Task:
        """The task, if the caller may see it; another client's answers as a missing one does."""
        task = await store.get(task_id)
        if not can_see(principal, task.owner):
            raise NotFound(f"no task {task_id}")
        return task

    async def admitted(principal: Principal, options: dict[str, Any]) -> dict[str, Any]:
        """What a new task of the caller carries besides ``options``: its owner, its queue quota (after its
        submission rate is checked), and whether its webhook may reach public addresses only."""
        admission: dict[str, Any] = {"owner": principal.owner}
        if "webhook" in options and not principal.admin:
            admission["webhook_public_only"] = True
            problem = None if security.private_webhooks else literal_target_problem(options["webhook"])
            if problem is not None:
                raise BadRequest(422, f"webhook: {problem}")
        if security.quotas is not None:
            await security.quotas.submission(principal)
            admission["max_queued"] = security.quotas.max_queued(principal)
        return admission

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest) -> JSONResponse:
        return _problem(exc.status, str(exc))

    @app.exception_handler(Unauthenticated)
    async def unauthenticated(request: Request, exc: Unauthenticated) -> JSONResponse:
        return _problem(401, str(exc), {"WWW-Authenticate": 'Bearer realm="comfyart"'})

    @app.exception_handler(QuotaExceeded)
    async def over_quota(request: Request, exc: QuotaExceeded) -> JSONResponse:
        return _problem(429, str(exc), {"Retry-After": exc.retry_after})

    for error_type, status in ERROR_STATUS.items():
        app.add_exception_handler(error_type, _answer_with(status))

    @app.exception_handler(TransientError)
    async def unavailable(request: Request, exc: TransientError) -> JSONResponse:
        return _problem(503, str(exc), {"Retry-After": str(max(1, round(exc.retry_after_s)))})

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _problem(422, _one_line(exc))

    @app.post("/api/tasks", status_code=201)
    async def submit_task(request: Request, principal: Caller) -> Any:
        """Queue a raw API-format graph (``{"prompt": {...}}``) or a run of a stored workflow
        (``{"workflow": NAME, "params": {...}}``)."""
        body = _object(await _json_body(request), {"prompt", "workflow", "params", *SCHEDULING_FIELDS},
                       "a 'prompt' field, or 'workflow' and 'params'")
        options = _scheduling(body)
        if "workflow" in body:
            if "prompt" in body:
                raise BadRequest(422, "give either 'prompt' or 'workflow', not both")
            if not isinstance(body["workflow"], str):
                raise BadRequest(422, "workflow must be a workflow's name")
            params = _params(body.get("params"))
            new, max_queued = _new_task(options, await admitted(principal, options))
            return _created(await resolver.submit(body["workflow"], params, task=new, max_queued=max_queued,
                                                  may_read=lambda task: can_see(principal, task.owner)))
        if "prompt" not in body:
            raise BadRequest(422, "missing field 'prompt' (a ComfyUI API-format graph) or 'workflow'")
        if "params" in body:
            raise BadRequest(422, "params apply to a workflow; a raw prompt carries its own values")
        problem = graph_problem(body["prompt"], max_nodes=security.limits.max_graph_nodes)
        if problem is not None:
            raise BadRequest(422, problem)
        new, max_queued = _new_task(options, await admitted(principal, options), prompt=body["prompt"])
        return _created(await store.create(new, max_queued=max_queued))

    @app.get("/api/tasks")
    async def list_tasks(principal: Caller, status: TaskStatus | None = None, limit: int = Query(50, ge=1, le=500),
                         offset: int = Query(0, ge=0, le=MAX_OFFSET)) -> Any:
        """Newest first (pending ones in the order they will run). A client sees its own tasks only."""
        owner = None if principal.admin else principal.id
        tasks = await store.page(status=status, limit=limit, offset=offset, owner=owner)
        return {"tasks": [t.model_dump(exclude={"prompt"}) for t in tasks],
                "total": await store.count(status, owner=owner), "limit": limit, "offset": offset}

    @app.get("/api/tasks/{task_id}")
    async def get_task(task_id: str, principal: Caller) -> Any:
        return (await visible_task(task_id, principal)).model_dump()

    @app.delete("/api/tasks/{task_id}")
    async def cancel_task(task_id: str, principal: Caller) -> Any:
        """Cancel: a queued task leaves the queue, a running one is interrupted on its backend. A task that
        already ended answers 409."""
        await visible_task(task_id, principal)
        try:
            return (await services.tracker.cancel(task_id)).model_dump(exclude={"prompt"})
        except InvalidTransition:
            task = await store.get(task_id)
            raise BadRequest(409, f"task {task_id} is already {task.status.value}") from None

    @app.post("/api/tasks/{task_id}/retry", status_code=201)
    async def retry_task(task_id: str, principal: Caller) -> Any:
        """Queue an ended task again as a new task (``retry_of`` names the old one): the same graph, or the same
        workflow version and parameters (the seed it used included), with its priority, tags and webhook. A task
        that has not ended answers 409."""
        task = await visible_task(task_id, principal)
        if task.status not in FINAL_STATUSES:
            raise BadRequest(409, f"task {task_id} is still {task.status.value}: cancel it first, or wait for its end")
        options: dict[str, Any] = {"priority": task.priority, "requires": task.requires, "vram_mb": task.vram_mb}
        if task.webhook is not None:
            options["webhook"] = task.webhook
        admission = await admitted(principal, options)
        if task.workflow is not None and task.workflow_version is not None \
                and await workflows.has_version(task.workflow, task.workflow_version):
            new, max_queued = _new_task(options, admission, workflow=task.workflow, params=task.params,
                                        workflow_version=task.workflow_version, retry_of=task.id)
            again = await store.create(new, max_queued=max_queued)
        elif task.prompt is not None:  # a raw graph, or a workflow's resolved graph whose version is gone
            new, max_queued = _new_task(options, admission, prompt=task.prompt, retry_of=task.id)
            again = await store.create(new, max_queued=max_queued)
        else:
            raise BadRequest(409, f"task {task_id} cannot run again: workflow {task.workflow} version "
                                  f"{task.workflow_version} was deleted before the task was dispatched")
        return _created(again)

    @app.post("/api/tasks/{task_id}/outputs/{filename}/link")
    async def share_output(principal: Caller, task_id: str, filename: str, request: Request,
                           expires_in_s: int | None = Query(None, ge=60, le=30 * 24 * 3600)) -> Any:
        """A URL of the output that needs no key until it expires (default ``auth.signed_url_ttl_s``)."""
        task = await visible_task(task_id, principal)
        if not any(o.filename == filename for o in task.outputs):
            raise NotFound(f"task {task_id} has no output {filename}")
        base = security.public_url or str(request.base_url).rstrip("/")
        url, expires = security.output_url(base, task_id, filename, expires_in_s)
        return {"url": url, "expires": expires}

    @app.get("/api/tasks/{task_id}/outputs/{filename}")
    async def get_output(task_id: str, filename: str, request: Request) -> Any:
        """The file; with ``expires`` and ``signature`` (from ``…/link``, or a webhook) no key is needed."""
        principal = request.scope.get("state", {}).get("principal")
        if principal is None:  # let in without credentials only for a signed URL: check it
            query = request.query_params
            if not signature_valid(security.url_secret, output_path(task_id, filename), query.get("expires"),
                                   query.get("signature"), time.time()):
                raise Unauthenticated("this link is invalid or has expired")
            task = await store.get(task_id)
        else:
            task = await visible_task(task_id, principal)
        record = next((o for o in task.outputs if o.filename == filename), None)
        if record is not None and record.bucket is not None and services.objects is not None:
            return RedirectResponse(await services.objects.presign(record.path), status_code=307)
        path = outputs.find(task_id, filename) if record is not None else None
        if record is None or path is None:
            raise NotFound(f"task {task_id} has no output {filename}")
        return FileResponse(path, media_type=record.content_type, filename=filename)

    # ------------------------------------------------------------------ workflows
    @app.get("/api/workflows")
    async def list_workflows() -> Any:
        return {"workflows": await workflows.summaries(), "file_errors": services.workflow_file_errors}

    @app.post("/api/workflows/infer", dependencies=admin)
    async def infer_workflow_parameters(request: Request) -> Any:
        """Candidate parameters for a graph: every literal input. Prune them, then PUT the workflow."""
        graph = _object(await _json_body(request), {"graph"}, "a 'graph' field").get("graph")
        problem = graph_problem(graph)
        if problem is not None:
            raise BadRequest(422, f"graph: {problem}")
        return {"params": {name: p.model_dump(mode="json") for name, p in infer_parameters(graph).items()}}

    @app.get("/api/workflows/{name}")
    async def get_workflow(name: str, version: int | None = Query(None, ge=1, le=MAX_OFFSET)) -> Any:
        workflow = await workflows.get(name, version)
        body = {**workflow.model_dump(mode="json"), "versions": await workflows.versions(name)}
        return JSONResponse(body, headers={"ETag": f'"{workflow.version}"'})

    @app.put("/api/workflows/{name}", dependencies=admin)
    async def put_workflow(name: str, request: Request) -> Any:
        """Create or replace a workflow; each change makes a new version. ``If-Match: "N"`` replaces only
        version N (and ``If-Match: "0"`` only creates)."""
        problem = workflow_name_problem(name)
        if problem is not None:
            raise BadRequest(422, f"name: {problem}")
        expected = _etag_version(request.headers.get("if-match"))
        try:
            definition = WorkflowDefinition.model_validate(await _json_body(request))
        except ValidationError as exc:
            raise BadRequest(422, describe_validation_error(exc)) from None
        problems = definition_problems(definition)
        if problems:
            raise BadRequest(422, "; ".join(problems))
        result = await workflows.put(name, definition, expected_version=expected)
        return JSONResponse({"name": name, "version": result.version, "changed": result.changed},
                            status_code=201 if result.created else 200,
                            headers={"ETag": f'"{result.version}"', "Location": f"/api/workflows/{name}"})

    @app.delete("/api/workflows/{name}", status_code=204, dependencies=admin)
    async def delete_workflow(name: str) -> Response:
        await workflows.delete(name)
        return Response(status_code=204)

    @app.post("/api/workflows/{name}/run", status_code=201)
    async def run_workflow(name: str, request: Request, principal: Caller) -> Any:
        """Queue a run: JSON ``{"params": {...}}``, or multipart with a ``params`` JSON field and image files
        named after their parameters."""
        if await workflows.current(name) is None:
            raise NotFound(f"no workflow {name}")
        params, files, options = await _run_request(request, inputs)
        new, max_queued = _new_task(options, await admitted(principal, options))
        return _created(await resolver.submit(name, params, files, task=new, max_queued=max_queued,
                                               may_read=lambda task: can_see(principal, task.owner)))

    @app.post("/api/inputs", status_code=201)
    async def upload_input(request: Request) -> Any:
        """Store an image for later runs (multipart, one file); a parameter then takes ``{"input": ID}``."""
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise BadRequest(415, "send the image as multipart/form-data")
        async with request.form(max_files=1, max_fields=1) as form:
            uploads = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
            if len(uploads) != 1:
                raise BadRequest(422, "send exactly one file")
            stored = await _store_upload(inputs, uploads[0], "file")
        return JSONResponse({"input": stored.id, "size": stored.size, "content_type": stored.content_type},
                            status_code=201)

    # ------------------------------------------------------------------ pool
    @app.get("/api/pool", dependencies=admin)
    async def get_pool() -> Any:
        """Hosts, backends (health, mode, load), recent errors, and the autoscaler's last decision and why."""
        return {**pool.describe(), "queue_length": await queue.length()}

    @app.post("/api/pool/health-check", dependencies=admin)
    async def health_check_now() -> Any:
        """Run one round now (probes, container checks, recycling, scaling) and return the pool."""
        return {**await controls.check_now(), "queue_length": await queue.length()}

    @app.post("/api/pool/scale", dependencies=admin)
    async def scale(request: Request) -> Any:
        """Set ``min_containers``, ``max_containers`` or a fixed ``target`` at run time (``null``: back to the
        configuration); kept in Redis across restarts."""
        body = _object(await _json_body(request), {"min_containers", "max_containers", "target"},
                       "min_containers, max_containers or target")
        for key, value in body.items():
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise BadRequest(422, f"{key} must be a whole number >= 0, or null")
        await controls.set_scale(body)
        return pool.describe()

    @app.post("/api/pool/backends", status_code=201, dependencies=admin)
    async def register_backend(request: Request) -> Any:
        """Register a static ComfyUI backend (a machine can announce itself at boot); kept in Redis. The same
        name and URL again answers 200."""
        body = _object(await _json_body(request), {"name", "url", "tags", "weight"}, "'name' and 'url'")
        try:
            static = StaticBackendConfig(**body)
        except ValidationError as exc:
            raise BadRequest(422, describe_validation_error(exc)) from None
        if not BACKEND_NAME.match(static.name):
            raise BadRequest(422, "name: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
        backend, created = await controls.register_static(static)
        return JSONResponse(backend.describe(), status_code=201 if created else 200)

    @app.delete("/api/pool/backends/{name}", status_code=202, dependencies=admin)
    async def deregister_backend(name: str) -> Any:
        """Forget a registered static backend: it takes no new work and leaves once its prompts are done."""
        return (await controls.deregister_static(name)).describe()

    @app.get("/api/pool/backends/{backend_id}/logs", dependencies=admin)
    async def backend_logs(backend_id: str, lines: int = Query(100, ge=1, le=10_000)) -> Any:
        """The last lines of a container's (or local process's) log, from Docker (or its log file)."""
        backend = pool.backends.get(backend_id)
        if backend is None:
            raise NotFound(f"no backend {backend_id}")
        if backend.provider is None or backend.spawned is None:
            raise NotFound(f"backend {backend_id} is run by someone else: comfyart has no log of it")
        text = await backend.provider.logs(backend.spawned, lines)
        return {"backend": backend_id, "lines": text.splitlines()[-lines:]}

    @app.post("/api/pool/backends/{backend_id}/{action}", dependencies=admin)
    async def control_backend(backend_id: str, action: str) -> Any:
        """``drain`` (no new work, then stopped; a static one waits), ``recycle`` (drain, then replace),
        ``enable`` (take work again; cancels a drain), ``disable`` (no new work, kept as is)."""
        return (await controls.act(backend_id, action)).describe()

    # ------------------------------------------------------------------ scheduler
    @app.get("/api/scheduler", dependencies=admin)
    async def get_scheduler() -> Any:
        """The settings in force, which ones were changed at run time, dispatch counters, and queued tasks that no
        backend in the pool could run (with why)."""
        return {**services.dispatcher.describe(), "queue_length": await queue.length()}

    @app.put("/api/scheduler", dependencies=admin)
    async def put_scheduler(request: Request) -> Any:
        """Change ``strategy``, ``order``, ``prefetch``, ``lookahead``, ``priority_ageing_s`` or
        ``affinity_max_skips`` at run time (``null``: back to the configured value); kept in Redis across restarts."""
        body = _object(await _json_body(request), set(SchedulerConfig.model_fields),
                       "scheduler settings")
        try:
            await services.dispatcher.apply(body)
        except ValidationError as exc:
            raise BadRequest(422, describe_validation_error(exc)) from None
        return {**services.dispatcher.describe(), "queue_length": await queue.length()}

    # ------------------------------------------------------------------ keys
    @app.get("/api/keys", dependencies=admin)
    async def list_keys() -> Any:
        """Every key: those made at run time and those of the configuration; never a key or its hash."""
        configured = security.authenticator.config_keys.values() if security.authenticator else ()
        made = await security.keys.records() if security.keys else []
        return {"keys": [k.describe() for k in [*configured, *made]]}

    @app.post("/api/keys", status_code=201, dependencies=admin)
    async def create_key(request: Request) -> Any:
        """A new key: ``{"name", "role": "client"|"admin", "max_queued", "submissions_per_minute"}``. The answer
        holds the key itself, the only time it is shown: only its hash is kept."""
        if security.keys is None:
            raise BadRequest(409, "auth is off: keys would not be checked; turn auth on first")
        body = _object(await _json_body(request), {"name", "role", "max_queued", "submissions_per_minute"},
                       "'name' and 'role'")
        name, role = body.get("name"), body.get("role", "client")
        if not isinstance(name, str) or not KEY_NAME.match(name):
            raise BadRequest(422, "name: 1-64 letters, digits, '.', '_', '@' or '-'")
        if role not in ("admin", "client"):
            raise BadRequest(422, "role: admin or client")
        max_queued = body.get("max_queued")
        if max_queued is not None and (not isinstance(max_queued, int) or isinstance(max_queued, bool)
                                       or max_queued < 0):
            raise BadRequest(422, "max_queued: a whole number >= 0 (0: no limit)")
        rate = body.get("submissions_per_minute")
        if rate is not None and (not isinstance(rate, (int, float)) or isinstance(rate, bool) or rate < 0):
            raise BadRequest(422, "submissions_per_minute: a number >= 0 (0: no limit)")
        record, key = await security.keys.create(name, Role(role), max_queued=max_queued,
                                                 submissions_per_minute=rate)
        return JSONResponse({**record.describe(), "key": key}, status_code=201,
                            headers={"Location": f"/api/keys/{record.id}"})

    @app.delete("/api/keys/{key_id}", dependencies=admin)
    async def revoke_key(key_id: str) -> Any:
        """Revoke a key made at run time: it is refused from the next request on. (Keys of the configuration
        leave with the configuration.)"""
        if security.keys is None:
            raise NotFound(f"no key {key_id}")
        return (await security.keys.revoke(key_id)).describe()

    add_event_routes(app, store, store.events)
    app.include_router(build_router(services.front))

    @app.get("/metrics", dependencies=admin, response_class=Response,
             responses={200: {"content": {"text/plain": {}}}})
    async def metrics() -> Response:
        """Prometheus text format: tasks by status, queue depth (and by priority), backends and their VRAM, pool,
        dispatch, attempt and webhook counters, wait and run time histograms."""
        if services.metrics is None:
            raise NotFound("metrics are off")
        return Response(await services.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/api/me")
    async def who_am_i(principal: Caller) -> Any:
        """The caller as the daemon sees it: its key's name and role (the dashboard shows the pool to admins)."""
        quotas = security.quotas
        return {"id": principal.id or None, "name": principal.name, "role": principal.role.value,
                "auth": principal.authenticated,
                "max_queued": quotas.max_queued(principal) if quotas is not None else None}

    @app.get("/api/stats")
    async def stats_history(window_s: float = Query(3600, ge=60, le=30 * 24 * 3600)) -> Any:
        """Samples of the queue's depth (``queued``, ``submitted``, ``running``) and of the tasks that ended in each
        interval (``completed``, ``failed``, ``canceled``), oldest first: the dashboard's charts."""
        if services.stats is None:
            raise NotFound("stats are off")
        return {"interval_s": services.stats.interval_s, "samples": await services.stats.read(window_s)}

    if services.dashboard:
        page_headers = {"Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
                                                   "connect-src 'self' ws: wss:; frame-ancestors 'none'",
                        "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}

        basic_user = security.authenticator.admin_user if security.authenticator is not None else None
        page = (DASHBOARD_DIR / "index.html").read_bytes()  # read once: it is the same for every visit

        @app.get("/", include_in_schema=False)
        async def dashboard(request: Request) -> Response:
            if basic_user and request.scope.get("state", {}).get("principal") is None:
                # ask for the basic-auth user first: once given, the browser sends it with every request of the
                # page, its WebSocket included. The page comes with the 401, so a user with an API key who
                # dismisses the prompt still gets it, and signs in with the key.
                return Response(page, status_code=401, media_type="text/html; charset=utf-8",
                                headers={**page_headers, "WWW-Authenticate": 'Basic realm="comfyart"'})
            return Response(page, media_type="text/html; charset=utf-8", headers=page_headers)

        app.mount("/ui", StaticFiles(directory=DASHBOARD_DIR), name="dashboard files")

    @app.get("/healthz")
    async def healthz() -> Any:
        try:
            await store.ping()
        except Exception as exc:  # any failure to reach Redis makes the daemon unhealthy
            return _problem(503, f"redis unreachable: {type(exc).__name__}")
        return {"status": "ok", "backends": len(pool.backends), "healthy_backends": len(pool.healthy()),
                "queue_length": await queue.length()}

    return app
