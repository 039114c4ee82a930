"""The ``APIRouter`` of ComfyUI's routes: each one a top-level function, served at the root and under ``/api``, and
both again under ``/comfy`` for the web editor, that reaches the ``FrontDoor``'s collaborators through
``comfyui.deps``. The editor's start-up routes, its user data and the jobs API are in modules of their own."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import JSONResponse, Response
from loguru import logger
from starlette.background import BackgroundTask

from comfyart.api.auth import AdminCaller, Caller
from comfyart.api.comfyui.deps import (
    CatalogDep,
    FilesDep,
    IndexDep,
    PoolDep,
    PromptsDep,
    SocketsDep,
    bad_json,
    json_body,
    unavailable,
)
from comfyart.api.comfyui.editor import EDITOR_PREFIX
from comfyart.api.comfyui.files import ViewOptions
from comfyart.api.comfyui.jobs import JOB_ROUTES
from comfyart.api.comfyui.shapes import FEATURES, history_entry, in_history, queue_item
from comfyart.api.comfyui.startup import STARTUP_ROUTES, UNPREFIXED_ROUTES
from comfyart.api.comfyui.userdata import USERDATA_ROUTES
from comfyart.api.deps import ServicesDep
from comfyart.api.forward import on_leader
from comfyart.errors import BackendUnavailable, QuotaExceeded, TransientError
from comfyart.models import FINAL_STATUSES, Task, TaskStatus

MAX_PAGE = 1_000_000_000


# ---------------------------------------------------------------------------------------------------- answers
def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` takes gzip (``q=0`` refuses it)."""
    for part in accept_encoding.lower().split(","):
        name, _, params = part.strip().partition(";")
        if name.strip() in ("gzip", "*"):
            return params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


def _listed(value: Any) -> list[Any]:
    """A list field of a request; anything else counts as none."""
    return value if isinstance(value, list) else []


def _over_quota(exc: QuotaExceeded) -> JSONResponse:
    return JSONResponse({"error": {"type": "quota_exceeded", "message": str(exc), "details": "", "extra_info": {}},
                         "node_errors": {}}, status_code=429,
                        headers={"Retry-After": exc.retry_after})


def _ended(tasks: Iterable[Task | None]) -> list[str]:
    """The prompt ids of those tasks that are final: what a history may forget."""
    return [t.comfy_prompt_id for t in tasks
            if t and t.status in FINAL_STATUSES and t.comfy_prompt_id is not None]


# ---------------------------------------------------------------------------------------------------- routes
async def prompt_post(request: Request, principal: Caller, prompts: PromptsDep, sockets: SocketsDep) -> Response:
    body = await json_body(request)
    if not isinstance(body, dict):
        return bad_json()
    try:
        status, answer = await prompts.queue_prompt(body, principal, request.headers.get("comfy-usage-source"))
    except TransientError as exc:
        return unavailable(exc)
    except QuotaExceeded as exc:
        return _over_quota(exc)
    # the queue's new length goes to the sockets after this answer, as ComfyUI orders them
    return JSONResponse(answer, status_code=status,
                        background=BackgroundTask(sockets.broadcast_status) if status == 200 else None)


async def prompt_get(sockets: SocketsDep) -> Any:
    return {"exec_info": {"queue_remaining": await sockets.remaining()}}


async def queue_get(principal: Caller, comfy: IndexDep, catalog: CatalogDep) -> Any:
    running: list[list[Any]] = []
    pending: list[list[Any]] = []
    for task in await comfy.open(principal.owner):
        item = queue_item(task, await catalog.outputs_to_execute(task))
        (running if task.status is TaskStatus.RUNNING else pending).append(item)
    return {"queue_running": running, "queue_pending": pending}


async def queue_post(request: Request, principal: Caller, comfy: IndexDep, prompts: PromptsDep) -> Response:
    body = await json_body(request)
    if not isinstance(body, dict):
        return bad_json()
    if body.get("clear") is True:
        for task in await comfy.open(principal.owner):
            await prompts.cancel(task, only_if=(TaskStatus.PENDING,))
    for prompt_id in _listed(body.get("delete")):
        found = await comfy.task(str(prompt_id), principal.owner)
        if found is not None:
            await prompts.cancel(found, only_if=(TaskStatus.PENDING,))
    return Response(status_code=200)


async def interrupt(request: Request, principal: Caller, comfy: IndexDep, prompts: PromptsDep,
                    services: ServicesDep) -> Response:
    # the prompts run on the leader's backends, through its tracker: a standby sends the request there
    if (forwarded := await on_leader(request, services)) is not None:
        return forwarded
    body = await json_body(request)
    prompt_id = body.get("prompt_id") if isinstance(body, dict) else None
    if prompt_id:
        task = await comfy.task(str(prompt_id), principal.owner)
        targets = [task] if task is not None else []
    else:
        targets = await comfy.open(principal.owner)
    for task in targets:
        await prompts.interrupt(task)
    return Response(status_code=200)


async def history_all(principal: Caller, comfy: IndexDep, catalog: CatalogDep, max_items: str | None = None,
                      offset: str | None = None) -> Response:
    try:
        limit = int(max_items) if max_items is not None else None
        start = int(offset) if offset is not None else None
    except ValueError:
        return JSONResponse({"error": "max_items and offset must be whole numbers"}, status_code=400)
    if limit is not None and limit < 0:
        limit = None
    # Redis takes 64-bit offsets, not any integer a query can spell
    limit = None if limit is None else min(limit, MAX_PAGE)
    start = None if start is None else min(start, MAX_PAGE)
    if start is not None:
        tasks = await comfy.history(newest_first=False, offset=max(0, start), limit=limit,
                                    owner=principal.owner)
    else:
        tasks = await comfy.history(newest_first=True, limit=limit or 10_000, owner=principal.owner)
        tasks.reverse()
    entries = {}
    for task in tasks:
        if in_history(task):
            entries[task.comfy_prompt_id] = history_entry(task, await catalog.outputs_to_execute(task))
    return JSONResponse(entries)


async def history_one(prompt_id: str, principal: Caller, comfy: IndexDep, catalog: CatalogDep) -> Any:
    task = await comfy.task(prompt_id, principal.owner)
    if task is None or not in_history(task):
        return {}
    return {prompt_id: history_entry(task, await catalog.outputs_to_execute(task))}


async def history_post(request: Request, principal: Caller, comfy: IndexDep) -> Response:
    body = await json_body(request)
    if not isinstance(body, dict):
        return bad_json()
    owner = principal.owner
    if body.get("clear") is True:
        await comfy.forget(_ended(await comfy.history(owner=owner)), owner)
    delete = [str(p) for p in _listed(body.get("delete"))]
    if delete:
        await comfy.forget(_ended([await comfy.task(p, owner) for p in delete]), owner)
    return Response(status_code=200)


async def view(principal: Caller, files: FilesDep, filename: str = "", subfolder: str = "",
               type: str = "output", preview: str | None = None, channel: str = "") -> Response:
    return await files.view(filename, subfolder, type, principal, ViewOptions(preview, channel))


async def upload(request: Request, principal: Caller, files: FilesDep) -> Response:
    return await files.upload(request, principal=principal)


async def upload_mask(request: Request, principal: Caller, files: FilesDep) -> Response:
    return await files.upload(request, mask=True, principal=principal)


async def system_stats(catalog: CatalogDep) -> Any:
    try:
        return await catalog.system_stats()
    except TransientError as exc:
        return unavailable(exc)


async def object_info(request: Request, catalog: CatalogDep) -> Response:
    try:
        encoded = await catalog.object_info_encoded()
    except TransientError as exc:
        return unavailable(exc)
    if accepts_gzip(request.headers.get("accept-encoding", "")):
        return Response(encoded.gzip, media_type="application/json",
                        headers={"Content-Encoding": "gzip", "Vary": "Accept-Encoding"})
    return Response(encoded.json, media_type="application/json", headers={"Vary": "Accept-Encoding"})


async def object_info_one(node_class: str, catalog: CatalogDep) -> Any:
    try:
        info = await catalog.object_info()
    except TransientError as exc:
        return unavailable(exc)
    return {node_class: info[node_class]} if node_class in info else {}


def passthrough(path: str) -> Callable[..., Any]:
    """The route that answers a backend's informational GET ``path``. (One per path, each named ``answer``: the name
    is the operation id and summary that /openapi.json shows.)"""
    async def answer(catalog: CatalogDep, folder: str | None = None) -> Response:
        try:
            status, body = await catalog.backend_json(path.format(folder=folder))
        except TransientError as exc:
            return unavailable(exc)
        return JSONResponse(body, status_code=status)
    return answer


async def features() -> Any:
    return FEATURES


async def free(request: Request, principal: AdminCaller, pool: PoolDep) -> Response:
    body = await json_body(request)
    if not isinstance(body, dict):
        return bad_json()
    for backend in pool.healthy():
        try:
            await backend.client.free(body)
        except BackendUnavailable as exc:
            logger.debug("POST /free failed backend={} error={}", backend.id, exc)
    return Response(status_code=200)


async def socket(websocket: WebSocket, principal: Caller, sockets: SocketsDep) -> None:
    await sockets.serve(websocket, principal)


ROUTES: list[tuple[str, str, Callable[..., Any]]] = [
    ("POST", "/prompt", prompt_post), ("GET", "/prompt", prompt_get),
    ("GET", "/queue", queue_get), ("POST", "/queue", queue_post), ("POST", "/interrupt", interrupt),
    ("GET", "/history", history_all), ("GET", "/history/{prompt_id}", history_one),
    ("POST", "/history", history_post), ("GET", "/view", view),
    ("POST", "/upload/image", upload), ("POST", "/upload/mask", upload_mask),
    ("GET", "/system_stats", system_stats), ("GET", "/object_info", object_info),
    ("GET", "/object_info/{node_class}", object_info_one), ("GET", "/embeddings", passthrough("/embeddings")),
    ("GET", "/extensions", passthrough("/extensions")), ("GET", "/models", passthrough("/models")),
    ("GET", "/models/{folder}", passthrough("/models/{folder}")), ("GET", "/features", features),
    ("POST", "/free", free),
]


def build_router() -> APIRouter:
    """Everything is also served under ``/api``, as ComfyUI does, and both again under ``/comfy`` for the editor
    served there (its page asks ``<its folder>/api/...``). With auth on, each API key has its own ComfyUI: its
    prompt ids, client ids, queue, history and jobs; another key's prompt is as unknown as a missing one.
    ``POST /free`` (it unloads models everywhere) is for admins."""
    router = APIRouter()
    for prefix in ("", "/api", EDITOR_PREFIX, EDITOR_PREFIX + "/api"):
        for method, path, endpoint in ROUTES + USERDATA_ROUTES + STARTUP_ROUTES:
            router.add_api_route(prefix + path, endpoint, methods=[method], include_in_schema=prefix == "",
                                 tags=["ComfyUI-compatible"])
            if method == "GET":  # aiohttp, so ComfyUI, answers HEAD on every GET route (download tools ask it)
                router.add_api_route(prefix + path, endpoint, methods=["HEAD"], include_in_schema=False)
        router.add_api_websocket_route(prefix + "/ws", socket)
    for prefix in ("", EDITOR_PREFIX):
        for method, path, endpoint in JOB_ROUTES + UNPREFIXED_ROUTES:
            router.add_api_route(prefix + path, endpoint, methods=[method], tags=["ComfyUI-compatible"],
                                 include_in_schema=prefix == "")
    return router
