"""``GET /api/v2/assets/{id}/content`` (API-V2.md §6.6, §10): the bytes of an uploaded asset, or of a finished
job's output (ids ``o1.…``, ``shapes.output_asset_id``: the caller must be allowed to see that job, else 404 as a
missing one). One ``Range`` (``policy.assets.byte_range``) answers 206, an unsatisfiable one 416; outputs kept in
object storage answer 302 to a fresh presigned URL (the SDK follows it, and sends no key there). Bytes that are gone
answer 404 ``output_unavailable``."""
from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse, StreamingResponse

from comfyart.api.auth import Caller
from comfyart.api.deps import Services, ServicesDep
from comfyart.api.v2.answers import V2Refused
from comfyart.api.v2.errors import error_body
from comfyart.api.v2.shapes import parse_output_asset_id
from comfyart.auth import Principal, can_see
from comfyart.clock import now_ms
from comfyart.errors import NotFound
from comfyart.policy.assets import Unsatisfiable, byte_range, content_range
from comfyart.policy.retention import is_expired

router = APIRouter()

READ_BYTES = 256 << 10


async def _pieces(file: BinaryIO, start: int, length: int) -> AsyncIterator[bytes]:
    """``length`` bytes of ``file`` from ``start``, read off the event loop; the file is closed at the end, also
    when the client goes away."""
    try:
        await asyncio.to_thread(file.seek, start)
        while length > 0:
            piece = await asyncio.to_thread(file.read, min(READ_BYTES, length))
            if not piece:
                return
            length -= len(piece)
            yield piece
    finally:
        await asyncio.to_thread(file.close)


def _open(path: Path) -> tuple[BinaryIO, int]:
    file = path.open("rb")
    return file, os.fstat(file.fileno()).st_size


async def file_answer(path: Path | None, content_type: str, range_header: str | None) -> Response:
    """The file's bytes, whole (200, ``Accept-Ranges``) or the range asked (206, ``Content-Range``), 416 for a
    range past the end; 404 ``output_unavailable`` when the file is gone."""
    try:
        if path is None:
            raise FileNotFoundError
        file, size = await asyncio.to_thread(_open, path)
    except (FileNotFoundError, IsADirectoryError):
        raise V2Refused("output_unavailable", "the bytes of this asset are no longer stored") from None
    asked = byte_range(range_header, size)
    headers = {"Accept-Ranges": "bytes"}
    if isinstance(asked, Unsatisfiable):
        await asyncio.to_thread(file.close)
        return JSONResponse(error_body("invalid_request", f"range not satisfiable: the asset has {size} bytes"),
                            status_code=416, headers={**headers, "Content-Range": asked.content_range})
    start, end = asked if asked is not None else (0, size - 1)
    length = end - start + 1
    headers["Content-Length"] = str(length)
    if asked is not None:
        headers["Content-Range"] = content_range(start, end, size)
    return StreamingResponse(_pieces(file, start, length), status_code=206 if asked is not None else 200,
                             media_type=content_type, headers=headers)


async def output_answer(principal: Principal, services: Services, task_id: str, filename: str,
                        range_header: str | None) -> Response:
    try:
        task = await services.store.get(task_id)
    except NotFound:
        task = None
    record = next((o for o in task.outputs if o.filename == filename), None) if task is not None else None
    if task is None or record is None or not can_see(principal, task.owner):
        raise V2Refused("not_found", "no such asset")
    if task.v2 and is_expired(task, now_ms=now_ms(), retention_s=services.api_v2.job_retention_s):
        raise V2Refused("output_unavailable", f"job {task_id} has expired: its outputs are no longer stored")
    if record.bucket is not None:  # kept in object storage: the client fetches it there
        if services.objects is None:
            raise V2Refused("output_unavailable", "this output is in object storage, which is not configured now")
        return RedirectResponse(await services.objects.presign(record.path), status_code=302)
    return await file_answer(await services.outputs.locate(task_id, filename, record.replica), record.content_type,
                             range_header)


@router.get("/api/v2/assets/{asset_id}/content", response_model=None)
async def asset_content(asset_id: str, request: Request, principal: Caller, services: ServicesDep) -> Response:
    range_header = request.headers.get("range")
    output = parse_output_asset_id(asset_id)
    if output is not None:
        return await output_answer(principal, services, output[0], output[1], range_header)
    record = await services.assets.get(principal.owner, asset_id) if services.assets is not None else None
    if record is None or services.blobs is None:
        raise V2Refused("not_found", f"no asset {asset_id}")
    return await file_answer(await services.blobs.locate(record.hex), record.content_type, range_header)
