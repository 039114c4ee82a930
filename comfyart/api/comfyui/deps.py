"""What the ComfyUI routes reach through dependencies (the ``FrontDoor``'s collaborators, among the services
``create_app`` put on the app's state), and the answers several of them give alike."""
from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from starlette.requests import HTTPConnection

from comfyart.api.comfyui.catalog import Catalog
from comfyart.api.comfyui.files import Files
from comfyart.api.comfyui.front import FrontDoor
from comfyart.api.comfyui.prompts import Prompts
from comfyart.api.comfyui.sockets import Sockets
from comfyart.api.limits import parse_json
from comfyart.auth import Principal
from comfyart.errors import TransientError
from comfyart.pool.registry import Pool
from comfyart.store.comfy_index import ComfyIndex
from comfyart.store.userdata import UserData


# Coroutines though they never wait: FastAPI runs a plain function dependency in a worker thread, a thread hop on
# every request.
def front_of(connection: HTTPConnection) -> FrontDoor:
    front: FrontDoor = connection.app.state.services.front
    return front


async def _front(connection: HTTPConnection) -> FrontDoor:
    return front_of(connection)


async def _index(connection: HTTPConnection) -> ComfyIndex:
    return front_of(connection).comfy


async def _catalog(connection: HTTPConnection) -> Catalog:
    return front_of(connection).catalog


async def _prompts(connection: HTTPConnection) -> Prompts:
    return front_of(connection).prompts


async def _sockets(connection: HTTPConnection) -> Sockets:
    return front_of(connection).sockets


async def _files(connection: HTTPConnection) -> Files:
    return front_of(connection).files


async def _pool(connection: HTTPConnection) -> Pool:
    return front_of(connection).pool


async def _userdata(connection: HTTPConnection) -> UserData:
    return front_of(connection).userdata


FrontDep = Annotated[FrontDoor, Depends(_front)]
IndexDep = Annotated[ComfyIndex, Depends(_index)]  # prompt ids, history and open prompts of each owner
CatalogDep = Annotated[Catalog, Depends(_catalog)]
PromptsDep = Annotated[Prompts, Depends(_prompts)]
SocketsDep = Annotated[Sockets, Depends(_sockets)]
FilesDep = Annotated[Files, Depends(_files)]
PoolDep = Annotated[Pool, Depends(_pool)]
UserDataDep = Annotated[UserData, Depends(_userdata)]


def sees_everyone(principal: Principal) -> bool:
    """Whether the jobs routes show the caller every owner's prompts: an admin's, with auth on (with auth off there
    is one namespace, everyone's already)."""
    return principal.admin and principal.authenticated


# ---------------------------------------------------------------------------------------------------- answers
async def json_body(request: Request) -> Any:
    """The body as JSON; None when it is not JSON or nests too deep (both answer as invalid JSON)."""
    request_body = await request.body()
    try:
        return parse_json(request_body, front_of(request).limits.max_json_depth) if request_body else {}
    except ValueError:
        return None


def bad_json() -> JSONResponse:
    return JSONResponse({"error": {"type": "invalid_json", "message": "body is not valid JSON", "details": "",
                                   "extra_info": {}}, "node_errors": {}}, status_code=400)


def unavailable(exc: TransientError) -> JSONResponse:
    return JSONResponse({"error": {"type": "unavailable", "message": str(exc), "details": "", "extra_info": {}},
                         "node_errors": {}}, status_code=503,
                        headers={"Retry-After": str(max(1, round(exc.retry_after_s)))})


def page_bounds(limit: str | None, offset: str) -> tuple[int | None, int] | None:
    """``limit`` and ``offset`` of a paged route as numbers (limit from 1, offset from 0); None when either is not."""
    try:
        count = int(limit) if limit is not None else None
        start = int(offset)
    except ValueError:
        return None
    return None if start < 0 or (count is not None and count < 1) else (count, start)
