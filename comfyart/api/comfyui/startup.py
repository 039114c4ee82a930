"""The rest of what ComfyUI's web editor asks at start-up and in its queue panel, for the whole pool: translations,
templates, subgraph blueprints, node replacements and model folders merged over the healthy backends; custom nodes'
scripts and other backends' files proxied from a backend that has them; the ``/internal`` routes.
``STARTUP_ROUTES`` are served bare and under ``/api`` as ``routes.ROUTES`` are; ``UNPREFIXED_ROUTES`` as they are."""
from __future__ import annotations

import asyncio
import mimetypes
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote, urlencode

from fastapi.responses import JSONResponse, Response, StreamingResponse
from loguru import logger

from comfyart.api.auth import Caller
from comfyart.api.comfyui.deps import CatalogDep, FrontDep, PoolDep, unavailable
from comfyart.errors import BackendUnavailable, TransientError
from comfyart.pool.backend import Backend
from comfyart.pool.registry import Pool

EXTENSION_CACHE_S = 60  # a custom node's script changes when its backend's node pack does: rarely
FILE_CACHE_S = 300
LOG_SIZE = {"cols": 80, "rows": 24}  # what ComfyUI reports without a terminal


# ---------------------------------------------------------------------------------------------------- helpers
def safe_path(path: str) -> str | None:
    """A relative file path from a request, URL-quoted for a backend, or None when it could leave its folder (``..``,
    an absolute path, a backslash) or names nothing."""
    segments = path.split("/")
    if not path or "\\" in path or "\0" in path or any(s in ("", ".", "..") for s in segments):
        return None
    return quote(path, safe="/")


def _not_found(message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=404)


async def proxied(backends: Sequence[Backend], path: str, *, cache_s: int | None = None) -> Response | None:
    """The first of ``backends`` to answer GET ``path`` with 200, its body streamed back with its content type;
    None when none does."""
    for backend in backends:
        try:
            found = await backend.client.open_file(path)
        except BackendUnavailable as exc:
            logger.debug("GET {} failed backend={} error={}", path, backend.id, exc)
            continue
        if found.status != 200:
            found.close()
            continue

        async def body(found: Any = found) -> Any:
            try:
                async for chunk in found.chunks():
                    yield chunk
            except BackendUnavailable as exc:  # the status is sent: all that is left is to end it short
                logger.debug("GET {} broke off error={}", path, exc)
            finally:
                found.close()

        media_type = found.content_type or mimetypes.guess_type(path.split("?")[0])[0] or "application/octet-stream"
        headers = {"X-Content-Type-Options": "nosniff"}
        if cache_s:
            headers["Cache-Control"] = f"public, max-age={cache_s}"
        return StreamingResponse(body(), media_type=media_type, headers=headers)
    return None


async def _file_from_any(pool: Pool, path: str, *, cache_s: int | None = None) -> Response:
    """``path`` from the first healthy backend that has it; 404 when none has, 503 when none is healthy."""
    backends = pool.healthy()
    if not backends:
        return unavailable(BackendUnavailable(f"no healthy backend to answer {path.split('?')[0]}"))
    answer = await proxied(backends, path, cache_s=cache_s)
    return answer if answer is not None else Response(status_code=404)


def merged(path: str) -> Callable[..., Any]:
    """The route of an informational GET whose answer is one object per backend, merged (``Catalog.merged_json``).
    (Each is named ``answer``: the name is the operation id /openapi.json shows.)"""
    async def answer(catalog: CatalogDep) -> Response:
        try:
            return JSONResponse(await catalog.merged_json(path))
        except TransientError as exc:
            return unavailable(exc)
    return answer


def listed(path: str) -> Callable[..., Any]:
    """The route of an informational GET whose answer is a list per backend, joined (``Catalog.backend_json``)."""
    async def answer(catalog: CatalogDep, folder: str | None = None) -> Response:
        try:
            status, body = await catalog.backend_json(path.format(folder=quote(folder or "", safe="")))
        except TransientError as exc:
            return unavailable(exc)
        return JSONResponse(body, status_code=status) if status == 200 else Response(status_code=status)
    return answer


# ---------------------------------------------------------------------------------------------------- routes
async def global_subgraph(subgraph_id: str, pool: PoolDep) -> Response:
    return await _file_from_any(pool, "/global_subgraphs/" + quote(subgraph_id, safe=""))


async def model_preview(folder: str, path_index: int, filename: str, pool: PoolDep) -> Response:
    name = safe_path(filename)
    if name is None:
        return Response(status_code=404)
    return await _file_from_any(pool, f"/experiment/models/preview/{quote(folder, safe='')}/{path_index}/{name}",
                                cache_s=FILE_CACHE_S)


async def view_metadata(folder: str, pool: PoolDep, filename: str = "") -> Response:
    if not filename.endswith(".safetensors") or safe_path(filename) is None:
        return Response(status_code=404)  # ComfyUI's answer to what it has no header of
    return await _file_from_any(pool, f"/view_metadata/{quote(folder, safe='')}?{urlencode({'filename': filename})}")


async def template_file(path: str, pool: PoolDep) -> Response:
    name = safe_path(path)
    if name is None:
        return _not_found("no such template")
    return await _file_from_any(pool, "/templates/" + name, cache_s=FILE_CACHE_S)


async def node_pack_template(pack: str, path: str, pool: PoolDep) -> Response:
    name = safe_path(f"{pack}/{path}")
    if name is None:
        return _not_found("no such workflow template")
    return await _file_from_any(pool, "/api/workflow_templates/" + name, cache_s=FILE_CACHE_S)


async def extension_file(pack: str, path: str, catalog: CatalogDep, pool: PoolDep) -> Response:
    """A custom node's web file, from a healthy backend whose ``/extensions`` lists it (one listing any script of
    its pack, for the pack's styles and pictures, which are not listed). ComfyUI's own ``extensions/core`` is the
    page's, never a backend's."""
    name = safe_path(f"{pack}/{path}")
    if name is None or pack == "core":
        return _not_found(f"no custom node serves /extensions/{pack}/{path}")
    try:
        sources = await catalog.listed_by("/extensions")
    except TransientError as exc:
        return unavailable(exc)
    listed_path = f"/extensions/{quote(pack, safe='')}/{path}"
    pack_prefix = f"/extensions/{quote(pack, safe='')}/"
    holders = sources.get(listed_path) or list(dict.fromkeys(
        b for item, ids in sources.items() if isinstance(item, str) and item.startswith(pack_prefix) for b in ids))
    backends = [b for b in pool.healthy() if b.id in holders]
    answer = await proxied(backends, "/extensions/" + name, cache_s=EXTENSION_CACHE_S) if backends else None
    return answer if answer is not None else _not_found(f"no custom node serves /extensions/{pack}/{path}")


async def folder_paths(catalog: CatalogDep) -> Response:
    try:
        status, body = await catalog.backend_json("/internal/folder_paths")
    except TransientError as exc:
        return unavailable(exc)
    return JSONResponse(body if status == 200 and isinstance(body, dict) else {})


# comfyart's own log, empty: the backends' logs hold other callers' prompts and the backends' paths, and the page
# shows one terminal, not one per backend (an admin reads a backend's through /api/pool/backends/{id}/logs)
async def logs() -> Any:
    return ""


async def logs_raw() -> Any:
    return {"entries": [], "size": LOG_SIZE}


async def logs_subscribe() -> Response:
    return Response(status_code=200)


async def internal_files(directory_type: str, principal: Caller, front: FrontDep) -> Response:
    """Input files: those uploaded to comfyart (what ``/view?type=input`` serves), for an admin (or anyone, with
    auth off): comfyart keeps uploads by content, not by who sent them, so a client key gets none rather than
    another's. Outputs live in one folder per task (``/api/jobs`` lists them) and temporary files stay on their
    backends: both answer ``[]``."""
    if directory_type not in ("output", "input", "temp"):
        return JSONResponse({"error": "Invalid directory type"}, status_code=400)
    if directory_type != "input" or not principal.admin:
        return JSONResponse([])
    return JSONResponse(await asyncio.to_thread(front.files.inputs.listing))


async def user_css() -> Response:
    return Response(status_code=404, media_type="text/css")  # the caller's own is /api/userdata/user.css


STARTUP_ROUTES: list[tuple[str, str, Callable[..., Any]]] = [
    ("GET", "/i18n", merged("/i18n")), ("GET", "/workflow_templates", merged("/workflow_templates")),
    ("GET", "/global_subgraphs", merged("/global_subgraphs")),
    ("GET", "/global_subgraphs/{subgraph_id}", global_subgraph),
    ("GET", "/node_replacements", merged("/node_replacements")),
    ("GET", "/experiment/models", listed("/experiment/models")),
    ("GET", "/experiment/models/{folder}", listed("/experiment/models/{folder}")),
    ("GET", "/experiment/models/preview/{folder}/{path_index}/{filename:path}", model_preview),
    ("GET", "/view_metadata/{folder}", view_metadata),
]
UNPREFIXED_ROUTES: list[tuple[str, str, Callable[..., Any]]] = [
    ("GET", "/templates/{path:path}", template_file),
    ("GET", "/api/workflow_templates/{pack}/{path:path}", node_pack_template),
    ("GET", "/extensions/{pack}/{path:path}", extension_file),
    ("GET", "/internal/folder_paths", folder_paths), ("GET", "/internal/logs", logs),
    ("GET", "/internal/logs/raw", logs_raw), ("PATCH", "/internal/logs/subscribe", logs_subscribe),
    ("GET", "/internal/files/{directory_type}", internal_files), ("GET", "/user.css", user_css),
]
