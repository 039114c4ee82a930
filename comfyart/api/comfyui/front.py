"""The ComfyUI-compatible front door: ComfyUI's own HTTP routes and WebSocket, served by comfyart for the whole
cluster, so a ComfyUI client points at comfyart unchanged (PROTOCOL.md is the reference for every shape here).

* ``POST /prompt`` validates the graph against the pool's ``/object_info`` and queues a comfyart task. The prompt
  id the client sees (its own, or one minted here) stays the same across retries and backends; each attempt runs
  under a prompt id of comfyart's on the backend.
* ``/ws?clientId=…`` gets the frames of that client's prompts from whichever backend runs them, rewritten to the
  client's prompt id (``Relay``), and the end of each prompt once its task is final: ``execution_success`` only
  after the outputs are stored, so ``/history`` and ``/view`` already answer. ``status`` counts the cluster's
  unfinished tasks.
* Outputs are named ``subfolder = <task id>[/<backend's subfolder>]``: two backends' ``ComfyUI_00001_.png`` never
  collide, and ``/view`` finds the task from the name.
* Everything is also served under ``/api``, as ComfyUI does.
* With auth on, each API key has its own ComfyUI: its prompt ids, client ids, queue, history and jobs; another
  key's prompt is as unknown as a missing one. ``POST /free`` (it unloads models everywhere) is for admins.
"""
from __future__ import annotations

import asyncio
import collections
import hashlib
import io
import json
import re
import struct
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from loguru import logger
from PIL import Image
from starlette.background import BackgroundTask
from starlette.datastructures import UploadFile

from comfyart.api.auth import AdminCaller, Caller
from comfyart.api.limits import parse_json
from comfyart.auth import NOBODY, Principal, can_see
from comfyart.bus import EventHub
from comfyart.comfy.validate import output_nodes, validate
from comfyart.config.sections import LimitsConfig
from comfyart.errors import BackendUnavailable, InvalidTransition, NotFound, QuotaExceeded, TransientError
from comfyart.files.inputs import INPUT_ID, InputStore, NotAnImage, TooLarge
from comfyart.files.objects import S3Outputs
from comfyart.files.outputs import OutputStore
from comfyart.models import FINAL_STATUSES, ComfyPrompt, NewTask, OutputFile, Relay, Task, TaskStatus, socket_key
from comfyart.pool.registry import Pool
from comfyart.store.comfy_index import ComfyIndex
from comfyart.store.queue import TaskQueue
from comfyart.store.quotas import Quotas
from comfyart.store.tasks import TaskStore
from comfyart.tracker.tracker import Tracker

OBJECT_INFO_TTL_S = 300.0
INFO_TTL_S = 60.0
STATS_TTL_S = 2.0
FETCH_CONCURRENCY = 8
CACHED_ANSWERS = 64
HOLD_PROGRESS_S = 0.05
ENDED_REMEMBERED = 1000
OUTBOX_FRAMES = 4096  # a client this far behind is disconnected, as it would stall nothing else
MAX_PAGE = 1_000_000_000
BACKEND_JSON_DEPTH = 256  # what a backend answers may nest deeper than a request, but not without end
PROMPT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
FEATURES = {"supports_preview_metadata": True, "max_upload_size": 64 << 20}
JOB_STATUS = {TaskStatus.PENDING: "pending", TaskStatus.RUNNING: "in_progress", TaskStatus.COMPLETED: "completed",
              TaskStatus.FAILED: "failed", TaskStatus.CANCELED: "cancelled"}
# frames of a running prompt that go to its client as they come; the end of a prompt is sent from its final
# status instead, so the client never hears of an attempt that comfyart retries elsewhere
RELAYED = frozenset({"execution_start", "execution_cached", "executing", "progress", "progress_state", "executed"})
PREVIEW_IMAGE, PREVIEW_WITH_METADATA = 1, 4


# ---------------------------------------------------------------------------------------------------- naming
def public_subfolder(task_id: str, subfolder: str) -> str:
    return f"{task_id}/{subfolder}" if subfolder else task_id


def _stored_match(stored: Sequence[OutputFile], node_id: str, ref: dict[str, Any]) -> OutputFile | None:
    name, subfolder = ref.get("filename"), ref.get("subfolder") or ""
    for output in stored:
        if (output.node_id == node_id and output.subfolder == subfolder
                and output.filename in (name, f"{node_id}_{name}")):
            return output
    return None


def public_outputs(task: Task, outputs: dict[str, Any] | None) -> dict[str, Any]:
    """A prompt's UI outputs as its client sees them: every file renamed into the task's subfolder (and to the
    name comfyart stored it under); everything else (text, flags) as the backend gave it."""
    if outputs is None:  # not recorded (a task queued through comfyart's own API): its stored files
        outputs = {}
        for output in task.outputs:
            outputs.setdefault(output.node_id, {}).setdefault("images", []).append(
                {"filename": output.filename, "subfolder": output.subfolder, "type": output.type})
    return {node_id: public_node_output(task.id, task.outputs, node_id, node_output)
            for node_id, node_output in outputs.items() if isinstance(node_output, dict)}


def public_node_output(task_id: str, stored: Sequence[OutputFile], node_id: str,
                       node_output: dict[str, Any]) -> dict[str, Any]:
    """One node's UI output for its client: each file in the task's subfolder, under the name ``stored`` has it
    by (a file not stored yet keeps the backend's name)."""
    shown: dict[str, Any] = {}
    for key, value in node_output.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) and "filename" in v for v in value):
            files = []
            for ref in value:
                match = _stored_match(stored, node_id, ref)
                files.append({**ref, "filename": match.filename if match else ref["filename"],
                              "subfolder": public_subfolder(task_id, ref.get("subfolder") or ""),
                              "type": ref.get("type", "output")})
            shown[key] = files
        else:
            shown[key] = value
    return shown


def rewrite_frame(relay: Relay, kind: str, data: dict[str, Any]) -> dict[str, Any]:
    """A backend's frame for its client: comfyart's prompt id replaced by the client's, output files renamed."""
    data = {**data, "prompt_id": relay.comfy_prompt_id}
    if kind == "progress_state" and isinstance(data.get("nodes"), dict):
        data["nodes"] = {k: {**v, "prompt_id": relay.comfy_prompt_id} if isinstance(v, dict) else v
                         for k, v in data["nodes"].items()}
    elif kind == "executed" and isinstance(data.get("output"), dict):
        data["output"] = public_node_output(relay.task_id, (), str(data.get("node")), data["output"])
    return data


def with_metadata(payload: bytes, relay: Relay, node: str | None) -> bytes:
    """A type-1 preview (what backends send comfyart) as type 4, for a client that negotiated preview metadata."""
    if len(payload) < 8 or struct.unpack(">I", payload[:4])[0] != PREVIEW_IMAGE:
        return payload
    image_type = "image/png" if struct.unpack(">I", payload[4:8])[0] == 2 else "image/jpeg"
    metadata = json.dumps({"node_id": node, "prompt_id": relay.comfy_prompt_id, "display_node_id": node,
                           "parent_node_id": None, "real_node_id": node, "image_type": image_type}).encode()
    return struct.pack(">II", PREVIEW_WITH_METADATA, len(metadata)) + metadata + payload[8:]


# ---------------------------------------------------------------------------------------------------- records
def _timestamp(ms: int | None) -> int:
    return ms if ms is not None else int(time.time() * 1000)


def terminal_message(task: Task) -> tuple[str, dict[str, Any]]:
    """How a final task's prompt ended, as ComfyUI reports it: execution_success, the backend's own
    execution_error / execution_interrupted, or one made up from comfyart's error when the backend sent none."""
    prompt_id = task.comfy_prompt_id
    when = _timestamp(task.finished_ms)
    if task.status is TaskStatus.COMPLETED:
        return "execution_success", {"prompt_id": prompt_id, "timestamp": when}
    last = (task.comfy_messages or [[None, None]])[-1]
    if last[0] in ("execution_error", "execution_interrupted") and isinstance(last[1], dict):
        return last[0], {**last[1], "prompt_id": prompt_id}
    if task.status is TaskStatus.CANCELED:
        return "execution_interrupted", {"prompt_id": prompt_id, "node_id": task.node, "node_type": None,
                                         "executed": [], "timestamp": when}
    return "execution_error", {"prompt_id": prompt_id, "node_id": task.node, "node_type": None, "executed": [],
                               "exception_message": task.error or "failed", "exception_type": "comfyart.TaskFailed",
                               "traceback": [], "current_inputs": {}, "current_outputs": [], "timestamp": when}


def queue_item(task: Task, outputs_to_execute: list[str]) -> list[Any]:
    number = task.number if task.number is not None else 0
    return [int(number) if float(number).is_integer() else number, task.comfy_prompt_id, task.prompt or {},
            task.extra_data or {}, outputs_to_execute]


def in_history(task: Task) -> bool:
    """Whether ComfyUI would keep the prompt in its history: it ran and ended. One deleted from the queue never
    gets there."""
    return task.status in FINAL_STATUSES and not (task.status is TaskStatus.CANCELED and task.started_ms is None)


def history_entry(task: Task, outputs_to_execute: list[str]) -> dict[str, Any]:
    prompt_id = task.comfy_prompt_id
    started = _timestamp(task.started_ms or task.finished_ms)
    # the backend's own messages when it sent them; the end is comfyart's, which may differ (canceled)
    messages: list[Any] = [[kind, {**data, "prompt_id": prompt_id}] for kind, data in task.comfy_messages or []
                           if kind in ("execution_start", "execution_cached") and isinstance(data, dict)]
    if not messages and task.started_ms is not None:
        messages += [["execution_start", {"prompt_id": prompt_id, "timestamp": started}],
                     ["execution_cached", {"nodes": [], "prompt_id": prompt_id, "timestamp": started}]]
    messages.append(list(terminal_message(task)))
    completed = task.status is TaskStatus.COMPLETED
    outputs = public_outputs(task, task.comfy_outputs)
    return {"prompt": queue_item(task, outputs_to_execute), "outputs": outputs,
            "status": {"status_str": "success" if completed else "error", "completed": completed,
                       "messages": messages},
            "meta": {n: {"node_id": n, "display_node": n, "parent_node": None, "real_node_id": n} for n in outputs}}


def job(task: Task, *, detail: bool = False) -> dict[str, Any]:
    """The newer ComfyUI jobs API's view of a task (PROTOCOL.md §6)."""
    outputs = public_outputs(task, task.comfy_outputs) if task.status is TaskStatus.COMPLETED else {}
    files = [dict(f, nodeId=n, mediaType=k) for n, o in outputs.items() for k, v in o.items()
             if isinstance(v, list) for f in v if isinstance(f, dict) and "filename" in f]
    previewable = [f for f in files if str(f["filename"]).lower().endswith((".png", ".jpg", ".jpeg", ".webp", ".gif",
                                                                             ".mp4", ".webm"))]
    workflow = ((task.extra_data or {}).get("extra_pnginfo") or {}).get("workflow")
    error = None
    if task.status in (TaskStatus.FAILED, TaskStatus.CANCELED):
        error = terminal_message(task)[1]
    body = {"id": task.comfy_prompt_id, "status": JOB_STATUS[task.status], "priority": task.number,
            "create_time": task.created_ms, "execution_start_time": task.started_ms,
            "execution_end_time": task.finished_ms, "execution_error": error, "outputs_count": len(files),
            "previewable_outputs_count": len(previewable), "preview_output": previewable[0] if previewable else None,
            "workflow_id": workflow.get("id") if isinstance(workflow, dict) else None}
    if detail:
        body.update(outputs=outputs, execution_status={"status_str": "success" if task.status is TaskStatus.COMPLETED
                                                       else "error", "completed": task.status is TaskStatus.COMPLETED},
                    workflow={"prompt": task.prompt or {}, "extra_data": task.extra_data or {}})
    return body


# ---------------------------------------------------------------------------------------------------- sockets
class _Connection:
    """One client socket's outbox: frames are queued without waiting and written by the socket's own handler."""

    def __init__(self, sid: str) -> None:
        self.sid = sid
        self.frames: collections.deque[Any] = collections.deque()
        self.ready = asyncio.Event()
        self.closed = False
        self.preview_metadata = False
        self.held: dict[str, Any] | None = None
        self.open: set[str] = set()  # its prompts not ended yet: no status may tell it the queue is shorter
        self.ended: collections.OrderedDict[str, None] = collections.OrderedDict()  # recent ends: no frame after
        self.status_sent: int | None = None
        self.nodes: dict[str, str | None] = {}  # client prompt id -> node running, for preview metadata

    def _append(self, frame: Any) -> None:
        if self.closed:
            return
        if len(self.frames) >= OUTBOX_FRAMES:
            logger.warning("comfyui client too slow, disconnected client={}", self.sid)
            self.close()
            return
        self.frames.append(frame)
        self.ready.set()

    def put(self, frame: Any) -> None:
        self.flush_held()
        self._append(frame)

    def hold(self, progress: dict[str, Any]) -> None:
        """A progress frame that waits for its preview: backends send comfyart type-1 previews after their
        progress, but a client that asked for metadata gets type 4, which ComfyUI sends before it."""
        self.flush_held()
        self.held = progress
        self.ready.set()

    def put_preview(self, preview: bytes) -> None:
        self._append(preview)
        self.flush_held()

    def flush_held(self) -> None:
        if self.held is not None:
            held, self.held = self.held, None
            self._append(held)

    def put_status(self, remaining: int, sid: str | None = None) -> None:
        """A ``status`` frame; a socket hears of a queue length once (the first one carries ``sid``)."""
        data: dict[str, Any] = {"status": {"exec_info": {"queue_remaining": remaining}}}
        if sid is not None:
            data["sid"] = sid
        self.status_sent = remaining
        self.put({"type": "status", "data": data})

    def close(self) -> None:
        self.closed = True
        self.ready.set()


class _Cached:
    def __init__(self) -> None:
        self.value: Any = None
        self.expires = 0.0
        self.lock = asyncio.Lock()


class FrontDoor:
    def __init__(self, *, store: TaskStore, queue: TaskQueue, comfy: ComfyIndex, pool: Pool, outputs: OutputStore,
                 inputs: InputStore, tracker: Tracker, session: aiohttp.ClientSession, events: EventHub,
                 objects: S3Outputs | None = None, quotas: Quotas | None = None,
                 limits: LimitsConfig | None = None) -> None:
        self.store = store
        self.queue = queue
        self.comfy = comfy
        self.quotas = quotas
        self.limits = limits or LimitsConfig()
        self.objects = objects
        self.pool = pool
        self.outputs = outputs
        self.inputs = inputs
        self.tracker = tracker
        self.session = session
        self.events = events
        self.connections: dict[str, _Connection] = {}  # by socket_key(owner, client id)
        self._cache: collections.OrderedDict[str, _Cached] = collections.OrderedDict()
        self._remaining: int | None = None
        tracker.frames = self

    # ------------------------------------------------------------------ frames from the tracker
    def forward(self, relay: Relay, kind: str, data: dict[str, Any]) -> None:
        connection = self.connections.get(relay.socket or "")
        if (connection is None or kind not in RELAYED or (kind == "executing" and data.get("node") is None)
                or relay.comfy_prompt_id in connection.ended):
            return
        if kind in ("executing", "progress") and data.get("node") is not None:
            connection.nodes[relay.comfy_prompt_id] = str(data["node"])
        connection.open.add(relay.comfy_prompt_id)
        frame = {"type": kind, "data": rewrite_frame(relay, kind, data)}
        if kind == "progress" and connection.preview_metadata:
            connection.hold(frame)
        else:
            connection.put(frame)

    def forward_binary(self, relay: Relay, payload: bytes) -> None:
        connection = self.connections.get(relay.socket or "")
        if connection is None or relay.comfy_prompt_id in connection.ended:
            return
        if connection.preview_metadata:
            connection.put_preview(with_metadata(payload, relay, connection.nodes.get(relay.comfy_prompt_id)))
        else:
            connection.put(payload)

    # ------------------------------------------------------------------ loop: ends of prompts, queue status
    async def run(self) -> None:
        """Sends each client the end of its prompts, and every socket the queue length when it changes."""
        def wanted(event: dict[str, Any]) -> bool:  # judged as it is published: the rest never queue up
            if event.get("type") != "task" or event.get("status") == event.get("previous"):
                return False
            if event.get("previous") is None and "client_id" in event:
                return False  # queued through POST /prompt: its status follows the HTTP answer (queue_prompt)
            return bool(self.connections) or "client_id" in event

        while True:  # a lagged subscription ends its stream: subscribe again
            with self.events.subscribe(wanted, capacity=100_000) as events:
                async for event in events:
                    burst = [event]
                    while (more := await events.get(0)) is not None:  # a burst: one status for all of it
                        burst.append(more)
                    for item in burst:
                        if item["type"] == "task" and item.get("client_id") and item["status"] in FINAL_STATUSES:
                            await self._send_end(item["id"], socket_key(item.get("owner"), item["client_id"]),
                                                 item.get("previous"))
                    await self.broadcast_status()

    async def _send_end(self, task_id: str, socket: str, previous: str | None) -> None:
        connection = self.connections.get(socket)
        if connection is None:
            return
        try:
            task = await self.store.get(task_id)
        except (NotFound, TransientError):
            return
        if task.comfy_prompt_id is None:
            return
        if task.status is TaskStatus.CANCELED and previous != TaskStatus.RUNNING:
            connection.open.discard(task.comfy_prompt_id)
            return  # a prompt deleted from the queue ends silently, as in ComfyUI
        kind, data = terminal_message(task)
        connection.put({"type": kind, "data": data})
        connection.put_status(await self.remaining())
        connection.put({"type": "executing", "data": {"node": None, "prompt_id": task.comfy_prompt_id}})
        connection.nodes.pop(task.comfy_prompt_id, None)
        connection.open.discard(task.comfy_prompt_id)
        connection.ended[task.comfy_prompt_id] = None
        if len(connection.ended) > ENDED_REMEMBERED:
            connection.ended.popitem(last=False)

    async def remaining(self) -> int:
        try:
            return await self.queue.unfinished()
        except TransientError:
            return self._remaining or 0

    async def broadcast_status(self) -> None:
        if not self.connections:
            return
        remaining = await self.remaining()
        self._remaining = remaining
        for connection in list(self.connections.values()):
            # a client's own unfinished prompts are still queued, whatever the count read a moment ago says:
            # their end brings the next status
            if connection.status_sent != remaining and remaining >= len(connection.open):
                connection.put_status(remaining)

    async def socket(self, websocket: WebSocket, principal: Caller) -> None:
        await websocket.accept()
        sid = websocket.query_params.get("clientId") or uuid.uuid4().hex
        key = socket_key(principal.owner, sid)
        connection = _Connection(sid)
        connection.put_status(await self.remaining(), sid)  # before any frame can be relayed to it
        replaced = self.connections.get(key)
        self.connections[key] = connection  # the newest socket of a client id takes over; the old one goes deaf
        if replaced is not None:
            replaced.frames.clear()
            connection.open = replaced.open
        reader = asyncio.get_running_loop().create_task(self._read_client(websocket, connection),
                                                        name=f"comfyui client {sid}")
        try:
            while not connection.closed:
                if connection.held is not None and not connection.frames:
                    try:  # a held progress frame goes out alone when no preview follows it soon
                        async with asyncio.timeout(HOLD_PROGRESS_S):
                            await connection.ready.wait()
                    except TimeoutError:
                        connection.flush_held()
                await connection.ready.wait()
                connection.ready.clear()
                while connection.frames and self.connections.get(key) is connection:
                    frame = connection.frames.popleft()
                    if isinstance(frame, bytes):
                        await websocket.send_bytes(frame)
                    else:
                        await websocket.send_text(json.dumps(frame))
                if self.connections.get(key) is not connection:
                    connection.frames.clear()
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass
        finally:
            connection.close()
            reader.cancel()
            if self.connections.get(key) is connection:
                del self.connections[key]

    async def _read_client(self, websocket: WebSocket, connection: _Connection) -> None:
        first = True
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                text = message.get("text")
                if first and text:
                    try:
                        frame = parse_json(text, self.limits.max_json_depth)
                    except ValueError:
                        frame = None
                    if isinstance(frame, dict) and frame.get("type") == "feature_flags":
                        data = frame.get("data") if isinstance(frame.get("data"), dict) else {}
                        connection.preview_metadata = data.get("supports_preview_metadata") is True
                        connection.put({"type": "feature_flags", "data": FEATURES})
                first = False  # anything else a client sends is ignored, as ComfyUI does
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            connection.close()

    # ------------------------------------------------------------------ what the pool knows
    async def _cached(self, key: str, ttl_s: float, fetch: Callable[[], Any]) -> Any:
        entry = self._cache.get(key)
        if entry is None:
            # keys come from requests (/models/{folder}): the oldest idle ones make room
            while len(self._cache) >= CACHED_ANSWERS:
                oldest = next((k for k, v in self._cache.items() if not v.lock.locked()), None)
                if oldest is None:
                    break
                del self._cache[oldest]
            entry = self._cache[key] = _Cached()
        self._cache.move_to_end(key)
        if entry.value is not None and time.monotonic() < entry.expires:
            return entry.value
        async with entry.lock:  # one fetch at a time; the others take its answer
            if entry.value is None or time.monotonic() >= entry.expires:
                entry.value = await fetch()
                entry.expires = time.monotonic() + ttl_s
        return entry.value

    async def object_info(self) -> dict[str, Any]:
        """The node classes of the whole pool: a class any healthy backend has, with the choices of its combo
        inputs merged (backends may hold different models). Identical answers are parsed once."""
        async def fetch() -> dict[str, Any]:
            backends = self.pool.healthy()
            if not backends:
                raise BackendUnavailable("no healthy backend to ask for /object_info")
            limit = asyncio.Semaphore(FETCH_CONCURRENCY)

            async def one(backend: Any) -> bytes | None:
                async with limit:
                    try:
                        status, body = await backend.client.get("/object_info")
                    except BackendUnavailable as exc:
                        logger.debug("no /object_info backend={} error={}", backend.id, exc)
                        return None
                    return body if status == 200 else None

            bodies = await asyncio.gather(*(one(b) for b in backends))
            merged: dict[str, Any] = {}
            seen = set()
            for body in bodies:
                if body is None or hashlib.sha256(body).digest() in seen:
                    continue
                seen.add(hashlib.sha256(body).digest())
                try:
                    merge_object_info(merged, parse_json(body, BACKEND_JSON_DEPTH))
                except (ValueError, TypeError, AttributeError):
                    continue
            if not merged:
                raise BackendUnavailable("no backend answered /object_info")
            return merged

        return await self._cached("object_info", OBJECT_INFO_TTL_S, fetch)

    async def backend_json(self, path: str, ttl_s: float = INFO_TTL_S) -> tuple[int, Any]:
        """A healthy backend's answer to an informational GET (status, JSON), cached."""
        async def fetch() -> tuple[int, Any]:
            for backend in self.pool.healthy():
                try:
                    status, body = await backend.client.get(path)
                    if status in (200, 404):
                        return status, parse_json(body, BACKEND_JSON_DEPTH)
                except (BackendUnavailable, ValueError):
                    continue
            raise BackendUnavailable(f"no healthy backend answered {path}")

        return await self._cached(f"json:{path}", ttl_s, fetch)

    async def system_stats(self) -> dict[str, Any]:
        async def fetch() -> dict[str, Any]:
            backends = self.pool.healthy()
            answers = await asyncio.gather(*(b.client.system_stats(5.0) for b in backends), return_exceptions=True)
            system: dict[str, Any] = {}
            devices: list[dict[str, Any]] = []
            for backend, answer in zip(backends, answers, strict=True):
                if isinstance(answer, BaseException):
                    continue
                system = system or dict(answer.get("system", {}))
                for device in answer.get("devices", []):
                    devices.append({**device, "name": f"{backend.id}: {device.get('name')}",
                                    "backend": backend.id})
            if not system:
                raise BackendUnavailable("no healthy backend answered /system_stats")
            system["argv"] = ["comfyart"]  # a backend's command line is not the caller's business
            return {"system": system, "devices": devices}

        return await self._cached("system_stats", STATS_TTL_S, fetch)

    # ------------------------------------------------------------------ queueing
    async def queue_prompt(self, body: dict[str, Any], principal: Principal = NOBODY) -> tuple[int, dict[str, Any]]:
        """POST /prompt: (status, answer) as ComfyUI gives them. Raises QuotaExceeded."""
        def refused(kind: str, message: str, node_errors: dict | None = None) -> tuple[int, dict[str, Any]]:
            return 400, {"error": {"type": kind, "message": message, "details": message, "extra_info": {}},
                         "node_errors": node_errors or {}}

        if self.quotas is not None:  # first: a client over its rate costs no validation
            await self.quotas.submission(principal)
        if "prompt" not in body:
            return refused("no_prompt", "No prompt provided")
        graph = body["prompt"]
        prompt_id = body.get("prompt_id")
        if prompt_id is not None and (not isinstance(prompt_id, str) or not PROMPT_ID.match(prompt_id)):
            return refused("invalid_prompt_id", "prompt_id must be 1-128 letters, digits, '.', '_', ':' or '-'")
        extra_data = body.get("extra_data") if isinstance(body.get("extra_data"), dict) else {}
        client_id = body.get("client_id") or extra_data.get("client_id")
        targets = body.get("partial_execution_targets")
        if targets is not None and (not isinstance(targets, list) or not all(isinstance(t, str) for t in targets)):
            return refused("invalid_prompt", "partial_execution_targets must be a list of node ids")
        if client_id is not None and not isinstance(client_id, str):
            return refused("invalid_prompt", "client_id must be a string")
        if isinstance(graph, dict) and len(graph) > self.limits.max_graph_nodes:
            return refused("invalid_prompt", f"prompt has {len(graph)} nodes; at most "
                                             f"{self.limits.max_graph_nodes} are allowed")
        object_info = await self.object_info()
        verdict = validate(graph, object_info, targets=targets, also_allowed=self._stored_input)
        if verdict.error is not None:
            return 400, {"error": verdict.error, "node_errors": verdict.node_errors}
        if targets is None and verdict.node_errors:
            targets = verdict.outputs  # what ComfyUI runs: the valid outputs only
        if "number" in body and isinstance(body["number"], (int, float)) and not isinstance(body["number"], bool):
            number: float = float(body["number"])
        else:
            number = await self.comfy.next_number()
            if body.get("front") is True:
                number = -number
        prompt_id = prompt_id or str(uuid.uuid4())
        extra_data = {**extra_data, **({"client_id": client_id} if client_id else {}),
                      "create_time": int(time.time() * 1000)}
        for secret in ("auth_token_comfy_org", "api_key_comfy_org"):
            extra_data.pop(secret, None)
        comfy = ComfyPrompt(prompt_id, number, client_id=client_id, extra_data=extra_data, comfy_targets=targets)
        await self.store.create(NewTask(graph, priority=1 if body.get("front") is True else 0, owner=principal.owner,
                                        comfy=comfy),
                                max_queued=self.quotas.max_queued(principal) if self.quotas is not None else 0)
        connection = self.connections.get(socket_key(principal.owner, client_id)) if client_id else None
        if connection is not None:
            connection.open.add(prompt_id)
        shown = number if "number" in body else int(number)
        return 200, {"prompt_id": prompt_id, "number": shown, "node_errors": verdict.node_errors}

    def _stored_input(self, value: Any) -> bool:
        return isinstance(value, str) and INPUT_ID.match(value.rsplit("/", 1)[-1]) is not None \
            and self.inputs.path(value.rsplit("/", 1)[-1]) is not None

    async def outputs_to_execute(self, task: Task) -> list[str]:
        if task.comfy_targets is not None:
            return task.comfy_targets
        try:
            return output_nodes(task.prompt or {}, await self.object_info())
        except BackendUnavailable:
            return []

    async def interrupt(self, task: Task) -> bool:
        try:
            return await self.tracker.interrupt(task.id)
        except (NotFound, TransientError):
            return False

    async def cancel(self, task: Task, *, only_if: tuple[TaskStatus, ...]) -> bool:
        if task.status not in only_if:
            return False
        try:
            await self.tracker.cancel(task.id)
        except (InvalidTransition, NotFound):
            return False
        return True

    # ------------------------------------------------------------------ files
    async def view(self, filename: str, subfolder: str, kind: str, principal: Principal = NOBODY) -> Response:
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
                    path = self.outputs.find(task.id, output.filename)
                    if path is not None:
                        return FileResponse(path, media_type=output.content_type, filename=output.filename)
            backend = self.pool.backends.get(task.backend or "")
            if backend is not None and task.status not in FINAL_STATUSES:
                return await self._proxy_view(backend, filename, rest, kind)  # not downloaded yet
            return Response(status_code=404)
        if kind == "input":
            path = self.inputs.path(filename)
            if path is not None:
                return FileResponse(path, media_type=self.inputs.content_type(filename), filename=filename)
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
        path = self.inputs.path(ref["filename"])
        if path is not None:
            return path
        task_id = str(ref.get("subfolder") or "").partition("/")[0]
        try:
            task = await self.store.get(task_id) if task_id else None
        except NotFound:
            return None
        if task is None or not can_see(principal, task.owner):
            return None
        return self.outputs.find(task.id, ref["filename"])


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


def merge_object_info(merged: dict[str, Any], info: dict[str, Any]) -> None:
    """Fold one backend's /object_info into ``merged``: new classes are added, and the choices of a combo input
    become the union of every backend's."""
    for class_name, class_info in info.items():
        if class_name not in merged:
            merged[class_name] = class_info
            continue
        known = merged[class_name].get("input", {})
        for section in ("required", "optional"):
            for name, spec in (class_info.get("input", {}).get(section) or {}).items():
                mine = (known.get(section) or {}).get(name)
                if (isinstance(mine, list) and mine and isinstance(mine[0], list)
                        and isinstance(spec, list) and spec and isinstance(spec[0], list)):
                    mine[0] = mine[0] + [choice for choice in spec[0] if choice not in mine[0]]


# ---------------------------------------------------------------------------------------------------- routes
def _json(request_body: bytes, max_depth: int) -> Any:
    """The body as JSON; None when it is not JSON or nests too deep (both answer as invalid JSON)."""
    try:
        return parse_json(request_body, max_depth) if request_body else {}
    except ValueError:
        return None


def _listed(value: Any) -> list[Any]:
    """A list field of a request; anything else counts as none."""
    return value if isinstance(value, list) else []


def _bad_json() -> JSONResponse:
    return JSONResponse({"error": {"type": "invalid_json", "message": "body is not valid JSON", "details": "",
                                   "extra_info": {}}, "node_errors": {}}, status_code=400)


def _unavailable(exc: TransientError) -> JSONResponse:
    return JSONResponse({"error": {"type": "unavailable", "message": str(exc), "details": "", "extra_info": {}},
                         "node_errors": {}}, status_code=503,
                        headers={"Retry-After": str(max(1, round(exc.retry_after_s)))})


def _over_quota(exc: QuotaExceeded) -> JSONResponse:
    return JSONResponse({"error": {"type": "quota_exceeded", "message": str(exc), "details": "", "extra_info": {}},
                         "node_errors": {}}, status_code=429,
                        headers={"Retry-After": exc.retry_after})


def build_router(front: FrontDoor) -> APIRouter:
    router = APIRouter()
    comfy = front.comfy
    depth = front.limits.max_json_depth

    async def prompt_post(request: Request, principal: Caller) -> Response:
        body = _json(await request.body(), depth)
        if not isinstance(body, dict):
            return _bad_json()
        try:
            status, answer = await front.queue_prompt(body, principal)
        except TransientError as exc:
            return _unavailable(exc)
        except QuotaExceeded as exc:
            return _over_quota(exc)
        # the queue's new length goes to the sockets after this answer, as ComfyUI orders them
        return JSONResponse(answer, status_code=status,
                            background=BackgroundTask(front.broadcast_status) if status == 200 else None)

    async def prompt_get() -> Any:
        return {"exec_info": {"queue_remaining": await front.remaining()}}

    async def queue_get(principal: Caller) -> Any:
        running, pending = [], []
        for task in await comfy.open(principal.owner):
            item = queue_item(task, await front.outputs_to_execute(task))
            (running if task.status is TaskStatus.RUNNING else pending).append(item)
        return {"queue_running": running, "queue_pending": pending}

    async def queue_post(request: Request, principal: Caller) -> Response:
        body = _json(await request.body(), depth)
        if not isinstance(body, dict):
            return _bad_json()
        if body.get("clear") is True:
            for task in await comfy.open(principal.owner):
                await front.cancel(task, only_if=(TaskStatus.PENDING,))
        for prompt_id in _listed(body.get("delete")):
            task = await comfy.task(str(prompt_id), principal.owner)
            if task is not None:
                await front.cancel(task, only_if=(TaskStatus.PENDING,))
        return Response(status_code=200)

    async def interrupt(request: Request, principal: Caller) -> Response:
        body = _json(await request.body(), depth)
        prompt_id = body.get("prompt_id") if isinstance(body, dict) else None
        if prompt_id:
            task = await comfy.task(str(prompt_id), principal.owner)
            targets = [task] if task is not None else []
        else:
            targets = await comfy.open(principal.owner)
        for task in targets:
            await front.interrupt(task)
        return Response(status_code=200)

    async def history_all(principal: Caller, max_items: str | None = None, offset: str | None = None) -> Response:
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
                entries[task.comfy_prompt_id] = history_entry(task, await front.outputs_to_execute(task))
        return JSONResponse(entries)

    async def history_one(prompt_id: str, principal: Caller) -> Any:
        task = await comfy.task(prompt_id, principal.owner)
        if task is None or not in_history(task):
            return {}
        return {prompt_id: history_entry(task, await front.outputs_to_execute(task))}

    async def history_post(request: Request, principal: Caller) -> Response:
        body = _json(await request.body(), depth)
        if not isinstance(body, dict):
            return _bad_json()
        owner = principal.owner
        if body.get("clear") is True:
            tasks = await comfy.history(owner=owner)
            await comfy.forget([t.comfy_prompt_id for t in tasks if t.status in FINAL_STATUSES], owner)
        delete = [str(p) for p in _listed(body.get("delete"))]
        if delete:
            tasks = [await comfy.task(p, owner) for p in delete]
            await comfy.forget([t.comfy_prompt_id for t in tasks if t and t.status in FINAL_STATUSES], owner)
        return Response(status_code=200)

    async def view(principal: Caller, filename: str = "", subfolder: str = "", type: str = "output") -> Response:
        return await front.view(filename, subfolder, type, principal)

    async def upload(request: Request, principal: Caller) -> Response:
        return await front.upload(request, principal=principal)

    async def upload_mask(request: Request, principal: Caller) -> Response:
        return await front.upload(request, mask=True, principal=principal)

    async def system_stats() -> Any:
        try:
            return await front.system_stats()
        except TransientError as exc:
            return _unavailable(exc)

    async def object_info() -> Any:
        try:
            return await front.object_info()
        except TransientError as exc:
            return _unavailable(exc)

    async def object_info_one(node_class: str) -> Any:
        try:
            info = await front.object_info()
        except TransientError as exc:
            return _unavailable(exc)
        return {node_class: info[node_class]} if node_class in info else {}

    def passthrough(path: str) -> Callable[..., Any]:
        async def answer(folder: str | None = None) -> Response:
            try:
                status, body = await front.backend_json(path.format(folder=folder))
            except TransientError as exc:
                return _unavailable(exc)
            return JSONResponse(body, status_code=status)
        return answer

    async def features() -> Any:
        return FEATURES

    async def free(request: Request, principal: AdminCaller) -> Response:
        body = _json(await request.body(), depth)
        if not isinstance(body, dict):
            return _bad_json()
        for backend in front.pool.healthy():
            try:
                await backend.client.free(body)
            except BackendUnavailable as exc:
                logger.debug("POST /free failed backend={} error={}", backend.id, exc)
        return Response(status_code=200)

    async def jobs(principal: Caller, status: str | None = None, workflow_id: str | None = None,
                   sort_by: str = "created_at",
                   sort_order: str = "desc", limit: str | None = None, offset: str = "0") -> Response:
        wanted = set(status.split(",")) if status else set(JOB_STATUS.values())
        if not wanted <= set(JOB_STATUS.values()) or sort_by not in ("created_at", "execution_duration") \
                or sort_order not in ("asc", "desc"):
            return JSONResponse({"error": "status must be pending, in_progress, completed, failed or cancelled; "
                                          "sort_by created_at or execution_duration; sort_order asc or desc"},
                                status_code=400)
        try:
            count = int(limit) if limit is not None else None
            start = int(offset)
            if start < 0 or (count is not None and count < 1):
                raise ValueError
        except ValueError:
            return JSONResponse({"error": "limit and offset must be whole numbers (limit from 1)"}, status_code=400)
        tasks = await comfy.history(owner=principal.owner)
        found = [j for j in (job(t) for t in tasks if JOB_STATUS[t.status] in wanted)
                 if workflow_id is None or j["workflow_id"] == workflow_id]
        if sort_by == "execution_duration":
            found.sort(key=lambda j: (j["execution_end_time"] or 0) - (j["execution_start_time"] or 0),
                       reverse=sort_order == "desc")
        else:
            found.sort(key=lambda j: j["create_time"], reverse=sort_order == "desc")
        page = found[start:start + count] if count is not None else found[start:]
        return JSONResponse({"jobs": page, "pagination": {"offset": start, "limit": count, "total": len(found),
                                                          "has_more": start + len(page) < len(found)}})

    async def job_one(job_id: str, principal: Caller) -> Response:
        task = await comfy.task(job_id, principal.owner)
        if task is None:
            return JSONResponse({"error": "Job not found"}, status_code=404)
        return JSONResponse(job(task, detail=True))

    async def job_cancel(job_id: str, principal: Caller) -> Response:
        task = await comfy.task(job_id, principal.owner)
        if task is None:
            return JSONResponse({"error": "Job not found"}, status_code=404)
        cancelled = await front.cancel(task, only_if=(TaskStatus.PENDING, TaskStatus.RUNNING))
        return JSONResponse({"cancelled": cancelled})

    async def jobs_cancel(request: Request, principal: Caller) -> Response:
        body = _json(await request.body(), depth)
        ids = body.get("job_ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            return JSONResponse({"error": "job_ids must be a list of job ids"}, status_code=400)
        cancelled = False
        for job_id in ids:
            task = await comfy.task(job_id, principal.owner)
            if task is not None:
                cancelled |= await front.cancel(task, only_if=(TaskStatus.PENDING, TaskStatus.RUNNING))
        return JSONResponse({"cancelled": cancelled})

    routes: list[tuple[str, str, Callable[..., Any]]] = [
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
    for prefix in ("", "/api"):
        for method, path, endpoint in routes:
            router.add_api_route(prefix + path, endpoint, methods=[method], include_in_schema=prefix == "",
                                 tags=["ComfyUI-compatible"])
        router.add_api_websocket_route(prefix + "/ws", front.socket)
    for method, path, endpoint in [("GET", "/api/jobs", jobs), ("GET", "/api/jobs/{job_id}", job_one),
                                   ("POST", "/api/jobs/cancel", jobs_cancel),
                                   ("POST", "/api/jobs/{job_id}/cancel", job_cancel)]:
        router.add_api_route(path, endpoint, methods=[method], tags=["ComfyUI-compatible"])
    return router
