"""ComfyUI's user manager for the cluster: ``/users``, ``/settings`` and ``/userdata``, kept in Redis per caller
(``store.userdata``). The identity is comfyart's caller, never the page's ``Comfy-User`` header: every key is the one
user of a single-user ComfyUI. Answers as ComfyUI's (``app/user_manager.py``, ``app/app_settings.py``), except that a
body that is no JSON, or settings that are no object, get 400 where ComfyUI fails with 500."""
from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from comfyart.api.auth import Caller
from comfyart.api.comfyui.deps import UserDataDep
from comfyart.api.limits import parse_json
from comfyart.clock import now_ms
from comfyart.policy.userdata import (
    SETTINGS_FILE,
    BadUserPath,
    is_directory,
    listing,
    merged_settings,
    new_user_id,
    served_as,
    user_path,
    userdata_target,
)
from comfyart.store.userdata import ABSENT, ANY, Expect, UserData, UserDataRefused

SETTINGS_TRIES = 32  # read-merge-write rounds before a settings change that keeps meeting another gives up



# ---------------------------------------------------------------------------------------------------- requests
async def _read_body(request: Request, cap: int) -> bytes | None:
    """The body, or None past ``cap`` bytes (refused by its Content-Length before a byte is read)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _json(raw: bytes, request: Request) -> Any:
    """The body as JSON; ValueError when it is not (or nests too deep)."""
    return parse_json(raw, request.app.state.services.front.limits.max_json_depth)


def _flag(request: Request, name: str, default: str) -> bool:
    return request.query_params.get(name, default).lower() == "true"


def _target(request: Request, file: str) -> tuple[str, str | None] | None:
    """The file (and a move's destination) the raw path names: the names are URL-encoded (``workflows%2Fx.json``)
    and the decoded path cannot tell their slashes from the route's, so they are read from the raw path."""
    path, raw = request.scope["path"], request.scope.get("raw_path")
    prefix = path[:len(path) - len(file)]  # the route ends with {file:path}
    if not isinstance(raw, bytes):  # a server that keeps no raw path: the name as decoded, and no move
        return file, None
    text = raw.decode("utf-8", "replace")
    return userdata_target(text[len(prefix):]) if text.startswith(prefix) else None


# ---------------------------------------------------------------------------------------------------- answers
def _text(status: int, message: str) -> Response:
    return PlainTextResponse(message, status_code=status)


def _refused(exc: UserDataRefused, userdata: UserData) -> Response:
    if exc.reason == "exists":
        return _text(409, "File already exists")
    if exc.reason == "missing":
        return Response(status_code=404)
    if exc.reason == "file_too_large":
        return _text(413, f"File larger than {userdata.max_file_bytes} bytes (limits.userdata_max_file_bytes)")
    if exc.reason == "full":
        return _text(413, f"Userdata quota exceeded: {userdata.max_bytes} bytes in all "
                          f"(limits.userdata_max_bytes), {exc.used} used")
    if exc.reason == "directory":
        return _text(400, "Invalid path: a directory of that name exists")
    return _text(400, "Invalid path: a file of that name is where a directory must be")  # parent_is_file


def _too_large(userdata: UserData) -> Response:
    return _text(413, f"File larger than {userdata.max_file_bytes} bytes (limits.userdata_max_file_bytes)")


def _saved(info: Any, path: str, full_info: bool) -> Response:
    return JSONResponse(info.as_comfy() if full_info else path)


# ---------------------------------------------------------------------------------------------------- /users
async def users_get(principal: Caller) -> Any:
    """A single-user ComfyUI whose settings are on the server already: the page asks for no user."""
    return {"storage": "server", "migrated": True}


async def users_post(request: Request, principal: Caller, userdata: UserDataDep) -> Response:
    """As a single-user ComfyUI answers: an id for the name (which changes nothing), 400 for its own user's."""
    raw = await _read_body(request, userdata.max_file_bytes)
    try:
        body = _json(raw, request) if raw is not None else None
    except ValueError:
        body = None
    username = body.get("username") if isinstance(body, dict) else None
    if not isinstance(username, str):
        return JSONResponse({"error": "body must be a JSON object with a username"}, status_code=400)
    try:
        return JSONResponse(new_user_id(username, str(uuid.uuid4())))
    except ValueError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)


# ---------------------------------------------------------------------------------------------------- /settings
async def _settings(userdata: UserData, owner: str | None) -> tuple[dict[str, Any], bytes | None]:
    """The caller's settings ({} when none, or unreadable, as ComfyUI), and the file's bytes as read."""
    raw = await userdata.read(owner, SETTINGS_FILE)
    try:
        settings = json.loads(raw) if raw is not None else {}
    except ValueError:
        settings = {}
    return (settings if isinstance(settings, dict) else {}), raw


async def _change_settings(userdata: UserData, owner: str | None,
                           change: Callable[[dict[str, Any]], dict[str, Any]]) -> Response:
    """Read, change and write back, again when another change came between (the page saves settings one by one,
    several at once): none is lost."""
    for _ in range(SETTINGS_TRIES):
        settings, raw = await _settings(userdata, owner)
        content = json.dumps(change(settings), indent=4).encode()
        try:
            await userdata.write(owner, SETTINGS_FILE, content, now_ms=now_ms(), expect=Expect.content(raw))
        except UserDataRefused as exc:
            if exc.reason == "changed":
                continue
            return _refused(exc, userdata)
        return Response(status_code=200)
    return PlainTextResponse("settings changed by other requests meanwhile; try again", status_code=503,
                             headers={"Retry-After": "1"})


async def settings_get(principal: Caller, userdata: UserDataDep) -> Response:
    return JSONResponse((await _settings(userdata, principal.owner))[0])


async def setting_get(setting_id: str, principal: Caller, userdata: UserDataDep) -> Response:
    return JSONResponse((await _settings(userdata, principal.owner))[0].get(setting_id))


async def _json_value(request: Request, userdata: UserData, not_json: str) -> Any:
    """The body of a settings change as JSON, or the answer to give instead (too large, or ``not_json``)."""
    raw = await _read_body(request, userdata.max_file_bytes)
    if raw is None:
        return _too_large(userdata)
    try:
        return _json(raw, request)
    except ValueError:
        return _text(400, not_json)


async def settings_post(request: Request, principal: Caller, userdata: UserDataDep) -> Response:
    update = await _json_value(request, userdata, "Settings must be a JSON object: the body is not JSON")
    if isinstance(update, Response):
        return update
    if not isinstance(update, dict):
        return _text(400, "Settings must be a JSON object")
    return await _change_settings(userdata, principal.owner, lambda settings: merged_settings(settings, update))


async def setting_post(setting_id: str, request: Request, principal: Caller, userdata: UserDataDep) -> Response:
    value = await _json_value(request, userdata, "A setting's value must be JSON")
    if isinstance(value, Response):
        return value
    return await _change_settings(userdata, principal.owner, lambda settings: {**settings, setting_id: value})


# ---------------------------------------------------------------------------------------------------- /userdata
async def userdata_list(request: Request, principal: Caller, userdata: UserDataDep) -> Response:
    """``GET /userdata?dir=&recurse=&split=&full_info=``: the files of a directory, as ComfyUI lists them."""
    directory = request.query_params.get("dir", "")
    if not directory:
        return _text(400, "Directory not provided")
    try:
        directory = user_path(directory, directory=True)
    except BadUserPath as exc:
        return _text(400, str(exc))
    files = await userdata.files(principal.owner)
    if not is_directory((f.path for f in files), directory):
        # a file answers an empty list, as ComfyUI's glob below it does
        return JSONResponse([]) if any(f.path == directory for f in files) else _text(404, "Directory not found")
    return JSONResponse(listing(files, directory, recurse=_flag(request, "recurse", ""),
                                full_info=_flag(request, "full_info", ""), split=_flag(request, "split", "")))


def _one_file(request: Request, file: str) -> str | Response:
    """The one file a GET or DELETE names (never a move), or the answer to give instead."""
    target = _target(request, file)
    if target is None or target[1] is not None:
        return Response(status_code=404)
    try:
        return user_path(target[0])
    except BadUserPath as exc:
        return _text(400, str(exc))


async def userdata_get(file: str, request: Request, principal: Caller, userdata: UserDataDep) -> Response:
    path = _one_file(request, file)
    if isinstance(path, Response):
        return path
    content = await userdata.read(principal.owner, path)
    if content is None:
        return Response(status_code=404)
    content_type, disposition = served_as(path)
    return Response(content, media_type=content_type,
                     headers={"Content-Disposition": disposition, "X-Content-Type-Options": "nosniff"})


async def userdata_post(file: str, request: Request, principal: Caller, userdata: UserDataDep) -> Response:
    """``POST /userdata/{file}?overwrite=&full_info=`` saves the body; ``POST /userdata/{file}/move/{dest}`` moves
    (one route: the raw path tells them apart)."""
    target = _target(request, file)
    if target is None:
        return Response(status_code=404)
    try:
        path = user_path(target[0])
        dest = user_path(target[1]) if target[1] is not None else None
    except BadUserPath as exc:
        return _text(400, str(exc))
    overwrite = request.query_params.get("overwrite", "true") != "false"
    full_info = _flag(request, "full_info", "false")
    try:
        if dest is not None:
            return _saved(await userdata.move(principal.owner, path, dest, overwrite=overwrite), dest, full_info)
        content = await _read_body(request, userdata.max_file_bytes)
        if content is None:
            return _too_large(userdata)
        info = await userdata.write(principal.owner, path, content, now_ms=now_ms(),
                                    expect=ANY if overwrite else ABSENT)
    except UserDataRefused as exc:
        return _refused(exc, userdata)
    return _saved(info, path, full_info)


async def userdata_delete(file: str, request: Request, principal: Caller, userdata: UserDataDep) -> Response:
    path = _one_file(request, file)
    if isinstance(path, Response):
        return path
    return Response(status_code=204 if await userdata.delete(principal.owner, path) else 404)


USERDATA_ROUTES: list[tuple[str, str, Callable[..., Any]]] = [
    ("GET", "/users", users_get), ("POST", "/users", users_post),
    ("GET", "/settings", settings_get), ("POST", "/settings", settings_post),
    ("GET", "/settings/{setting_id:path}", setting_get), ("POST", "/settings/{setting_id:path}", setting_post),
    ("GET", "/userdata", userdata_list), ("GET", "/userdata/{file:path}", userdata_get),
    ("POST", "/userdata/{file:path}", userdata_post), ("DELETE", "/userdata/{file:path}", userdata_delete),
]
