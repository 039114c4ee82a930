"""Files in and out: ``/view`` (a file of output/, input/ or temp/, re-encoded on request) and
``/upload/image`` and ``/upload/mask`` (into input/ by default).
"""
from __future__ import annotations

import asyncio
import mimetypes
import os
import stat

from aiohttp import web

from comfyart.emulator.answers import failure
from comfyart.emulator.engine import EMULATOR
from comfyart.emulator.images import reencode

# /view answers a plain GET of a file up to this size from memory, with the headers aiohttp's FileResponse (what
# ComfyUI answers with) would send: FileResponse takes three trips to a thread per file (open, read, close), which
# was a tenth of a fleet's CPU at full throughput. Conditional and range requests still go to FileResponse.
INLINE_VIEW_BYTES = 1 << 20
_FILE_RESPONSE_HEADERS = ("Range", "If-Range", "If-Match", "If-None-Match", "If-Modified-Since",
                          "If-Unmodified-Since")

routes = web.RouteTableDef()


@routes.get("/view")
async def view(request: web.Request) -> web.StreamResponse:
    emu = request.app[EMULATOR]
    filename = request.query.get("filename")
    if not filename:
        return web.Response(status=404)
    if "view_hangs" in emu.behaviour.garbage:
        endless = web.StreamResponse(headers={"Content-Type": "image/png"})
        await endless.prepare(request)
        while True:
            await endless.write(b"\x89")
            await asyncio.sleep(1.0)
    kind = request.query.get("type", "output")
    for tag in ("input", "output", "temp"):
        if filename.endswith(f" [{tag}]"):
            filename, kind = filename[:-len(tag) - 3], tag
    if filename.startswith("/") or ".." in filename:
        return web.Response(status=400)
    bases = emu.folders()
    if kind not in bases:
        return web.Response(status=400)
    base = os.path.abspath(bases[kind])
    folder = os.path.abspath(os.path.join(base, request.query.get("subfolder", "")))
    if os.path.commonpath([folder, base]) != base:
        return web.Response(status=403)
    path = os.path.join(folder, filename)
    try:
        file_stat = os.stat(path)
    except OSError:
        return web.Response(status=404)
    if not stat.S_ISREG(file_stat.st_mode):
        return web.Response(status=404)
    return _file_answer(request, path, filename, file_stat)


def _file_answer(request: web.Request, path: str, filename: str, file_stat: os.stat_result) -> web.StreamResponse:
    content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    disposition = {"Content-Disposition": f'filename="{filename}"'}
    preview, channel = request.query.get("preview"), request.query.get("channel", "rgba")
    if content_type.startswith("image/") and (preview or channel != "rgba"):
        data, content_type = reencode(path, preview, channel)
        return web.Response(body=data, headers={**disposition, "Content-Type": content_type})
    if file_stat.st_size <= INLINE_VIEW_BYTES and not any(h in request.headers for h in _FILE_RESPONSE_HEADERS):
        with open(path, "rb") as file:
            body = file.read()
        response = web.Response(body=body, headers={**disposition, "Content-Type": content_type,
                                                    "Accept-Ranges": "bytes"})
        response.etag = f"{file_stat.st_mtime_ns:x}-{file_stat.st_size:x}"
        response.last_modified = file_stat.st_mtime
        return response
    return web.FileResponse(path, headers={**disposition, "Content-Type": content_type})


async def upload(request: web.Request) -> web.Response:
    emu = request.app[EMULATOR]
    if emu.behaviour.refuse_uploads > 0:
        emu.behaviour.refuse_uploads -= 1
        return failure()
    try:
        form = await request.post()
    except ValueError:
        return web.Response(status=400)
    image = form.get("image")
    if not isinstance(image, web.FileField):  # a plain field (or none) where the file should be
        return web.Response(status=400)
    kind = str(form.get("type", "input"))
    base = os.path.abspath(emu.folders().get(kind, emu.input_dir))
    subfolder = str(form.get("subfolder", ""))
    folder = os.path.abspath(os.path.join(base, subfolder))
    name = image.filename or ""
    target = os.path.abspath(os.path.join(folder, name))
    if not name or os.path.commonpath([folder, base]) != base or os.path.dirname(target) != folder:
        return web.Response(status=400)
    data = image.file.read()
    os.makedirs(folder, exist_ok=True)
    overwrite = str(form.get("overwrite", "")).lower() in ("true", "1")
    stem, ext = os.path.splitext(name)
    index = 1
    while not overwrite and os.path.exists(target):
        with open(target, "rb") as existing:
            if existing.read() == data:
                break
        name = f"{stem} ({index}){ext}"
        target = os.path.join(folder, name)
        index += 1
    with open(target, "wb") as out:
        out.write(data)
    return web.json_response({"name": name, "subfolder": subfolder, "type": kind})


routes.post("/upload/image")(upload)
routes.post("/upload/mask")(upload)
