"""Files through ComfyUI's routes: ``/view`` (stored outputs, presigned redirects, a running prompt's file proxied
from its backend, uploaded inputs), and ``/upload/image`` and ``/upload/mask`` (``apply_mask``), stored by content."""
from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from fastapi import Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from PIL import Image
from starlette.datastructures import UploadFile

from comfyart.api.comfyui.shapes import FEATURES
from comfyart.api.limits import parse_json
from comfyart.auth import NOBODY, Principal, can_see
from comfyart.config.sections import LimitsConfig
from comfyart.errors import NotFound
from comfyart.files.inputs import InputStore, NotAnImage, TooLarge
from comfyart.files.objects import S3Outputs
from comfyart.files.outputs import OutputStore
from comfyart.models import FINAL_STATUSES, Task
from comfyart.pool.registry import Pool
from comfyart.store.tasks import TaskStore


class Files:
    """Outputs are named ``subfolder = <task id>[/<backend's subfolder>]``: two backends' ``ComfyUI_00001_.png``
    never collide, and ``/view`` finds the task from the name."""

    def __init__(self, *, store: TaskStore, pool: Pool, outputs: OutputStore, inputs: InputStore,
                 session: aiohttp.ClientSession, objects: S3Outputs | None, limits: LimitsConfig) -> None:
        self.store = store
        self.pool = pool
        self.outputs = outputs
        self.inputs = inputs
        self.session = session
        self.objects = objects
        self.limits = limits

    async def view(self, filename: str, subfolder: str, kind: str, principal: Principal = NOBODY,
                   options: ViewOptions | None = None) -> Response:
        if not filename or "\0" in filename or "\0" in subfolder:
            return Response(status_code=404)
        if ".." in filename.replace("\\", "/").split("/") or filename.startswith(("/", "\\")):
            return Response(status_code=400)
        if kind not in ("output", "input", "temp"):
            return Response(status_code=400)
        task_id, _, rest = subfolder.partition("/")
        task: Task | None = None
        if task_id:
            try:
                task = await self.store.get(task_id)
            except NotFound:
                task = None
        if task is not None and not can_see(principal, task.owner):
            return Response(status_code=404)
        if task is not None:
            for output in task.outputs:
                if output.filename == filename and output.subfolder == rest and output.type == kind:
                    if output.bucket is not None and self.objects is not None:
                        return RedirectResponse(await self.objects.presign(output.path), status_code=307)
                    path = await self.outputs.locate(task.id, output.filename, output.replica)
                    if path is not None:
                        return await serve_file(path, output.content_type, output.filename, options)
            backend = self.pool.backends.get(task.backend or "")
            if backend is not None and task.status not in FINAL_STATUSES:
                return await self._proxy_view(backend, filename, rest, kind)  # not downloaded yet
            return Response(status_code=404)
        if kind == "input":
            path = await self.inputs.locate(filename)
            if path is not None:
                return await serve_file(path, self.inputs.content_type(filename), filename, options)
        return Response(status_code=404)

    async def _proxy_view(self, backend: Any, filename: str, subfolder: str, kind: str) -> Response:
        params = {"filename": filename, "subfolder": subfolder, "type": kind}
        try:
            response = await self.session.get(backend.url.rstrip("/") + "/view", params=params,
                                              timeout=aiohttp.ClientTimeout(total=120))
        except (aiohttp.ClientError, TimeoutError):
            return Response(status_code=404)
        if response.status != 200:
            response.release()
            return Response(status_code=404)

        async def body() -> Any:
            try:
                async for chunk in response.content.iter_chunked(1 << 16):
                    yield chunk
            finally:
                response.release()

        return StreamingResponse(body(), media_type=response.headers.get("Content-Type"))

    async def upload(self, request: Request, *, mask: bool = False, principal: Principal = NOBODY) -> Response:
        """POST /upload/image and /upload/mask: the file is stored by comfyart (by content) and put on whichever
        backend runs a prompt that names it. The name it answers is what the graph must use. A mask is applied as
        the alpha channel of its ``original_ref`` image, as ComfyUI does, and the result stored."""
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            return Response(status_code=400)
        async with request.form(max_files=2, max_fields=8) as form:
            image = form.get("image")
            if not isinstance(image, UploadFile):
                return Response(status_code=400)
            kind = form.get("type") if isinstance(form.get("type"), str) else "input"
            original = None
            if mask:
                original = await self._original(form.get("original_ref"), principal)
                if original is None:
                    return JSONResponse({"error": "original_ref must name an uploaded image or an output"},
                                        status_code=400)

            async def chunks() -> Any:
                if original is not None:
                    yield await asyncio.to_thread(apply_mask, original, await image.read(FEATURES["max_upload_size"]))
                    return
                while chunk := await image.read(1 << 20):
                    yield chunk

            try:
                stored = await self.inputs.add(chunks())
            except (NotAnImage, MaskError) as exc:
                return JSONResponse({"error": str(exc)}, status_code=415)
            except TooLarge as exc:
                return JSONResponse({"error": str(exc)}, status_code=413)
        return JSONResponse({"name": stored.id, "subfolder": "", "type": kind or "input"})

    async def _original(self, ref: Any, principal: Principal) -> Path | None:
        """The file an ``original_ref`` names: a stored input, or an output of a task the caller may see."""
        try:
            ref = parse_json(ref, self.limits.max_json_depth) if isinstance(ref, str) else None
        except ValueError:
            return None
        if not isinstance(ref, dict) or not isinstance(ref.get("filename"), str):
            return None
        path = await self.inputs.locate(ref["filename"])
        if path is not None:
            return path
        task_id = str(ref.get("subfolder") or "").partition("/")[0]
        try:
            task = await self.store.get(task_id) if task_id else None
        except NotFound:
            return None
        if task is None or not can_see(principal, task.owner):
            return None
        record = next((o for o in task.outputs if o.filename == ref["filename"]), None)
        return await self.outputs.locate(task.id, ref["filename"], record.replica if record is not None else None)


@dataclass(frozen=True)
class ViewOptions:
    """/view's ``preview=webp|jpeg[;quality]`` and ``channel=rgba|rgb|a`` (the mask editor asks an image's colours
    and its alpha apart)."""

    preview: str | None = None
    channel: str = ""  # none asked: rgba (but a jpeg preview stays one)


# shown in the browser, as ComfyUI does (the editor's "Open Image"); anything else is an attachment, never a page
INLINE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/gif", "image/avif", "video/mp4",
                          "video/webm", "audio/mpeg", "audio/wav", "audio/ogg", "audio/flac"})


async def serve_file(path: Any, content_type: str | None, filename: str, options: ViewOptions | None) -> Response:
    inline = content_type in INLINE_TYPES
    headers = {"X-Content-Type-Options": "nosniff"}
    if options is not None and (options.preview or options.channel not in ("", "rgba")) and inline \
            and str(content_type).startswith("image/"):
        try:
            data, content_type = await asyncio.to_thread(reencode, Path(path), options)
        except (OSError, ValueError, Image.DecompressionBombError):
            pass  # served as it is
        else:
            return Response(data, media_type=content_type, headers={
                **headers, "Content-Disposition": f'inline; filename="{_quoted(filename)}"'})
    return FileResponse(path, media_type=content_type, filename=filename, headers=headers,
                        content_disposition_type="inline" if inline else "attachment")


def _quoted(filename: str) -> str:
    return "".join(c for c in filename if c.isprintable() and c not in '"\\')


def reencode(path: Path, options: ViewOptions) -> tuple[bytes, str]:
    """The image as ComfyUI 0.3.64's /view re-encodes it: a preview (webp where asked or where the alpha is
    wanted, else jpeg), or PNG of its colours (``rgb``) or of its alpha on black (``a``)."""
    buffer = io.BytesIO()
    with Image.open(path) as image:
        if options.preview:
            kind, *rest = options.preview.split(";")
            fmt = "webp" if kind not in ("webp", "jpeg") or "a" in options.channel else kind
            quality = int(rest[-1]) if rest and rest[-1].isdigit() else 90
            picture = image.convert("RGB") if fmt == "jpeg" or options.channel == "rgb" else image
            picture.save(buffer, format=fmt, quality=quality)
            return buffer.getvalue(), f"image/{fmt}"
        if options.channel == "rgb":
            image.convert("RGB").save(buffer, format="PNG")
        elif options.channel == "a":
            alpha = image.getchannel("A") if image.mode == "RGBA" else Image.new("L", image.size, 255)
            layer = Image.new("RGBA", image.size)
            layer.putalpha(alpha)
            layer.save(buffer, format="PNG")
        else:
            image.save(buffer, format="PNG")
        return buffer.getvalue(), "image/png"


class MaskError(ValueError):
    pass


def apply_mask(original: Path, mask: bytes) -> bytes:
    """``original`` with the alpha channel of ``mask`` (resized to it), as PNG: ComfyUI's /upload/mask."""
    try:
        with Image.open(original) as base, Image.open(io.BytesIO(mask)) as alpha_source:
            composite = base.convert("RGBA")
            alpha = alpha_source.convert("RGBA").getchannel("A")
            if alpha.size != composite.size:
                alpha = alpha.resize(composite.size)
            composite.putalpha(alpha)
            out = io.BytesIO()
            composite.save(out, format="PNG", compress_level=4)
            return out.getvalue()
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise MaskError(f"cannot apply the mask: {exc}") from exc
