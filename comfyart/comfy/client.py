"""One ComfyUI backend over aiohttp: submit a prompt, read /history and /queue, download outputs, and its
WebSocket (``connections``, from ``comfy.websocket``).

Every call has a deadline; aiohttp errors become BackendUnavailable here and nowhere else.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, BinaryIO
from urllib.parse import urlencode

import aiohttp

from comfyart.comfy.protocol import HistoryOutcome, OutputRef, history_outcome, prompt_in_queue, prompt_running
from comfyart.comfy.websocket import BackendSocket, reconnecting
from comfyart.errors import BackendUnavailable, PromptRejected

WRITE_BATCH_BYTES = 1 << 20
UPLOAD_CHUNK_BYTES = 1 << 20  # a streamed upload's read off the event loop: one hop per MiB
Offload = Callable[..., Awaitable[Any]]  # runs a blocking call off the event loop: asyncio.to_thread's shape


@asynccontextmanager
async def map_http_errors(what: str) -> AsyncIterator[None]:
    try:
        yield
    except (aiohttp.ClientError, TimeoutError, ValueError, RecursionError) as exc:  # RecursionError: JSON too deep
        raise BackendUnavailable(f"{what}: {type(exc).__name__}: {exc}".rstrip(": ")) from exc


class BackendFile:
    """A backend's answer to a GET whose body is still to be read: its status and content type, its body in chunks
    (a broken transfer ends it early, with a BackendUnavailable), then ``close``."""

    def __init__(self, response: aiohttp.ClientResponse, path: str) -> None:
        self._response = response
        self.path = path
        self.status = response.status
        self.content_type = response.headers.get("Content-Type")

    async def chunks(self) -> AsyncIterator[bytes]:
        async with map_http_errors(f"GET {self.path}"):
            async for chunk in self._response.content.iter_chunked(1 << 16):
                yield chunk

    def close(self) -> None:
        self._response.release()


class ComfyClient:
    def __init__(self, session: aiohttp.ClientSession, base_url: str, *, timeout_s: float = 30.0) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)

    def ws_url(self, client_id: str) -> str:
        return self.base_url.replace("http", "ws", 1) + f"/ws?clientId={client_id}"

    def connections(self, client_id: str, *, before_connect: Callable[[], None] | None = None,
                    ) -> AsyncGenerator[BackendSocket, None]:
        """The backend's WebSocket under ``client_id``, connected again each time the caller is done with the
        last connection (``comfy.websocket.reconnecting``; ``before_connect`` runs before each connect)."""
        return reconnecting(self.session, self.ws_url(client_id), before_connect=before_connect)

    async def _get_json(self, path: str, *, timeout: aiohttp.ClientTimeout | None = None) -> Any:
        async with (
            map_http_errors(f"GET {path}"),
            self.session.get(self.base_url + path, timeout=timeout or self.timeout) as response,
        ):
            if response.status != 200:
                raise BackendUnavailable(f"GET {path} answered HTTP {response.status}")
            return await response.json(content_type=None)

    async def submit(self, prompt: dict[str, Any], *, client_id: str, prompt_id: str,
                     extra_data: dict[str, Any] | None = None,
                     targets: list[str] | None = None) -> dict[str, Any]:
        """POST /prompt. Raises PromptRejected on a validation failure, BackendUnavailable when the answer is
        lost or garbled (the prompt may or may not have been queued: look it up before submitting again)."""
        body: dict[str, Any] = {"prompt": prompt, "client_id": client_id, "prompt_id": prompt_id}
        if extra_data:
            body["extra_data"] = {**extra_data, "client_id": client_id}
        if targets is not None:
            body["partial_execution_targets"] = targets
        async with (
            map_http_errors("POST /prompt"),
            self.session.post(self.base_url + "/prompt", json=body, timeout=self.timeout) as response,
        ):
            payload = await response.json(content_type=None) if response.status in (200, 400) else None
            if response.status == 400 and isinstance(payload, dict):
                raise PromptRejected(payload.get("error"), payload.get("node_errors") or {})
            if response.status != 200 or not isinstance(payload, dict):
                raise BackendUnavailable(f"POST /prompt answered HTTP {response.status}")
            return payload

    async def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The history entry of one prompt, or None while it is unknown or unfinished."""
        payload = await self._get_json(f"/history/{prompt_id}")
        if not isinstance(payload, dict):
            raise BackendUnavailable("GET /history answered something other than an object")
        entry = payload.get(prompt_id)
        return entry if isinstance(entry, dict) else None

    async def outcome(self, prompt_id: str, queue: dict[str, Any] | None = None,
                      ) -> tuple[HistoryOutcome, dict[str, Any] | None]:
        """What /history says of a prompt, and, when it has no end of it, /queue (``queue``: an answer already
        read); returns both."""
        outcome = history_outcome(await self.history(prompt_id))
        if not outcome.finished and queue is None:
            queue = await self.queue()
            if not prompt_in_queue(queue, prompt_id):
                # it may have finished between the two lookups: /history again, before calling it lost
                outcome = history_outcome(await self.history(prompt_id))
        return outcome, queue

    async def queue(self) -> dict[str, Any]:
        payload = await self._get_json("/queue")
        if not isinstance(payload, dict):
            raise BackendUnavailable("GET /queue answered something other than an object")
        return payload

    async def get(self, path: str) -> tuple[int, bytes]:
        """GET ``path`` as it is: (status, body), for answers comfyart passes on to its own clients."""
        async with (
            map_http_errors(f"GET {path}"),
            self.session.get(self.base_url + path, timeout=self.timeout) as response,
        ):
            return response.status, await response.read()

    async def open_file(self, path: str) -> BackendFile:
        """GET ``path`` (a file the backend serves: a custom node's script, a template, a preview) without reading
        its body yet: the caller reads ``chunks`` and closes it."""
        try:
            response = await self.session.get(self.base_url + path, timeout=self.timeout)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise BackendUnavailable(f"GET {path}: {type(exc).__name__}: {exc}".rstrip(": ")) from exc
        return BackendFile(response, path)

    async def free(self, body: dict[str, Any]) -> None:
        """POST /free: unload models and/or drop cached outputs once the running prompt ends."""
        await self._post_json("/free", body)

    async def _post_json(self, path: str, body: dict[str, Any]) -> None:
        async with (
            map_http_errors(f"POST {path}"),
            self.session.post(self.base_url + path, json=body, timeout=self.timeout) as response,
        ):
            if response.status != 200:
                raise BackendUnavailable(f"POST {path} answered HTTP {response.status}")

    async def interrupt(self, prompt_id: str) -> None:
        """POST /interrupt for that prompt only: ComfyUI ignores it unless the prompt is the one running."""
        await self._post_json("/interrupt", {"prompt_id": prompt_id})

    async def delete_queued(self, prompt_id: str) -> None:
        """Take a prompt that waits in the backend's queue out of it (the running one stays)."""
        await self._post_json("/queue", {"delete": [prompt_id]})

    async def withdraw(self, prompt_id: str) -> bool:
        """Interrupt the prompt if it runs, or take it out of the queue; returns whether it was running."""
        queue = await self.queue()
        if prompt_running(queue, prompt_id):
            await self.interrupt(prompt_id)
            return True
        if prompt_in_queue(queue, prompt_id):
            await self.delete_queued(prompt_id)
        return False

    async def system_stats(self, timeout_s: float | None = None) -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(total=timeout_s) if timeout_s else None
        payload = await self._get_json("/system_stats", timeout=timeout)
        if not isinstance(payload, dict) or "system" not in payload:
            raise BackendUnavailable("GET /system_stats is not ComfyUI's answer")
        return payload

    async def upload_image(self, data: bytes | BinaryIO, *, name: str, content_type: str, timeout_s: float,
                           size: int | None = None, offload: Offload = asyncio.to_thread) -> str:
        """POST /upload/image with overwrite, so the backend keeps ``name``; returns the name the graph must use
        (``subfolder/name`` when the backend put it in a subfolder). ``data``: the bytes, or an open file of
        ``size`` bytes from its current position, streamed: read a chunk at a time through ``offload`` (off the
        event loop), never held whole; the caller closes it."""
        form = aiohttp.FormData()
        body: bytes | _FileChunks = data if isinstance(data, bytes) else _FileChunks(data, size, offload)
        form.add_field("image", body, filename=name, content_type=content_type)
        form.add_field("type", "input")
        form.add_field("overwrite", "true")
        async with (
            map_http_errors(f"POST /upload/image {name}"),
            self.session.post(self.base_url + "/upload/image", data=form,
                              timeout=aiohttp.ClientTimeout(total=timeout_s)) as response,
        ):
            payload = await response.json(content_type=None) if response.status == 200 else None
            if not isinstance(payload, dict) or not isinstance(payload.get("name"), str):
                raise BackendUnavailable(f"POST /upload/image {name} answered HTTP {response.status}")
        subfolder = payload.get("subfolder") or ""
        return f"{subfolder}/{payload['name']}" if subfolder else payload["name"]

    async def download(self, ref: OutputRef, place: Callable[[], str], *, timeout_s: float,
                       offload: Offload = asyncio.to_thread) -> tuple[str, int, str, str]:
        """Stream one output to the path ``place()`` returns; returns (that path, size, sha256 hex, content
        type). The file work (``place``, which may create directories, then writes and a rename) runs through
        ``offload``, off the event loop."""
        query = urlencode({"filename": ref.filename, "subfolder": ref.subfolder, "type": ref.type})
        digest = hashlib.sha256()
        size = 0
        deadline = aiohttp.ClientTimeout(total=timeout_s)
        file = _OutputFile(place)
        try:
            async with (
                map_http_errors(f"GET /view {ref.filename}"),
                self.session.get(f"{self.base_url}/view?{query}", timeout=deadline) as response,
            ):
                if response.status != 200:
                    raise BackendUnavailable(f"GET /view {ref.filename} answered HTTP {response.status}")
                content_type = response.headers.get("Content-Type", "application/octet-stream").split(";")[0]
                if response.content_length is not None and response.content_length <= WRITE_BATCH_BYTES:
                    # the usual picture: read whole, then one hop to place, write, close and rename it
                    body = await response.read()
                    digest.update(body)
                    return await offload(file.finish, body), len(body), digest.hexdigest(), content_type
                pending = bytearray()
                async for chunk in response.content.iter_chunked(1 << 16):
                    digest.update(chunk)
                    size += len(chunk)
                    pending += chunk
                    if len(pending) >= WRITE_BATCH_BYTES:  # disk writes stay off the event loop, a batch a hop
                        await offload(file.write, bytes(pending))
                        pending.clear()
                # a small file costs one hop in all: place, open, write, close, rename
                path = await offload(file.finish, bytes(pending))
        except BaseException:
            await offload(file.discard)
            raise
        return path, size, digest.hexdigest(), content_type


class _OutputFile:
    """A download's file, written under ``.part`` and renamed when complete; every method blocks (run them in a
    thread)."""

    def __init__(self, place: Callable[[], str]) -> None:
        self.place = place
        self.path: str | None = None
        self.file: BinaryIO | None = None

    def write(self, data: bytes) -> None:
        if self.file is None:
            self.path = self.place()
            self.file = open(self.path + ".part", "wb")  # noqa: SIM115 - closed in finish or discard
        self.file.write(data)

    def finish(self, data: bytes) -> str:
        self.write(data)
        assert self.file is not None and self.path is not None
        self.file.close()
        os.replace(self.path + ".part", self.path)
        return self.path

    def discard(self) -> None:
        if self.file is not None:
            self.file.close()
            if self.path is not None and os.path.exists(self.path + ".part"):
                os.unlink(self.path + ".part")


async def _chunks_of(file: BinaryIO, size: int, offload: Offload) -> AsyncIterator[bytes]:
    left = size
    while left > 0:
        chunk = await offload(file.read, min(UPLOAD_CHUNK_BYTES, left))
        if not chunk:
            raise OSError(f"{getattr(file, 'name', 'a file')} ended {left} bytes early while being uploaded")
        left -= len(chunk)
        yield chunk


class _FileChunks(aiohttp.AsyncIterablePayload):
    """A file's bytes as a multipart part, read a chunk at a time as the request is sent. Its size is known, so
    the request has a Content-Length (as a whole upload's has), and no chunked transfer encoding."""

    def __init__(self, file: BinaryIO, size: int | None, offload: Offload) -> None:
        if size is None:
            raise ValueError("a streamed upload needs its size")
        super().__init__(_chunks_of(file, size, offload))
        self._file_size = size

    @property
    def size(self) -> int:
        return self._file_size
