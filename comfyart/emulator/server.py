"""A ComfyUI-compatible HTTP + WebSocket server that runs graphs with the emulator's node catalogue.

It reproduces the message sequences recorded from ComfyUI 0.3.64 (shared/comfyui/transcripts): one worker
runs one prompt at a time from a heap ordered by ``number``; lifecycle events go only to the socket of the
prompt's ``client_id``; ``status`` is broadcast; history is written before the final ``executing`` frame.

Behaviour for tests is set with CLI flags or at run time through ``POST /emulator/control``:
``fail_node_types`` (raise in those node types), ``crash_on_prompt`` (exit the process when the next prompt
starts), ``hang`` (the next node never finishes), ``drop_ws_after_start`` (close every socket once the next
prompt has started), ``drop_prompt_answers`` (queue the next N prompts but lose the answer), ``refuse_prompts``
(answer the next N prompts with HTTP 500, unqueued), ``refuse_uploads`` (the same for the next N image uploads),
``node_s`` and ``step_s`` (durations), and ``garbage``: a list of ways to misbehave like a broken or hostile
backend (GARBAGE lists them).
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import mimetypes
import os
import random
import stat
import string
import struct
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web
from PIL import Image

from .nodes import SPECS, Context, NodeError, run_node
from .ordering import ExecutionOrder
from .validation import validate_prompt

FAILURE_TEXT = "500 Internal Server Error\n\nServer got itself in trouble"
SERVER_FEATURES = {"supports_preview_metadata": True, "max_upload_size": 104857600}
MODEL_FOLDERS = ["checkpoints", "configs", "loras", "vae", "text_encoders", "diffusion_models", "clip_vision",
                 "style_models", "embeddings", "diffusers", "vae_approx", "controlnet", "gligen", "upscale_models",
                 "custom_nodes", "hypernetworks", "photomaker", "classifiers", "model_patches", "audio_encoders"]
# /view answers a plain GET of a file up to this size from memory, with the headers aiohttp's FileResponse (what
# ComfyUI answers with) would send: FileResponse takes three trips to a thread per file (open, read, close), which
# was a tenth of a fleet's CPU at full throughput. Conditional and range requests still go to FileResponse.
INLINE_VIEW_BYTES = 1 << 20
_FILE_RESPONSE_HEADERS = ("Range", "If-Range", "If-Match", "If-None-Match", "If-Modified-Since",
                          "If-Unmodified-Since")
CLOSE_SOCKETS = object()  # an outbox entry that closes the sockets instead of sending a frame
# what ``garbage`` may hold: each makes one part of the server answer junk
GARBAGE = {
    "prompt_answer": "POST /prompt queues the prompt but answers HTML with status 200",
    "history": "/history answers invalid JSON with status 200",
    "deep_json": "/history answers JSON nested 100,000 deep",
    "ws_junk": "once a prompt starts, its socket gets junk frames: not JSON, wrong shapes, wrong types, "
               "odd ids, deep nesting, short binary frames",
    "huge_frame": "once a prompt starts, its socket gets one 65 MiB text frame",
    "view_hangs": "/view sends its headers, then a byte a second, never ending",
}
DEEP = 100_000
DEFAULT_CHECKPOINTS = ["v1-5-pruned-emaonly-fp16.safetensors", "sd_xl_base_1.0.safetensors",
                       "dreamshaper_8.safetensors", "realisticVision_v60.safetensors"]


@dataclass
class Behaviour:
    node_s: float = 0.0
    step_s: float = 0.02
    fail_node_types: list[str] = field(default_factory=list)
    crash_on_prompt: bool = False
    hang: bool = False
    drop_ws_after_start: bool = False
    model_load_s: float = 0.0
    drop_prompt_answers: int = 0  # queue the next N prompts but cut the connection instead of answering
    refuse_prompts: int = 0  # answer the next N POST /prompt with HTTP 500 without queueing them
    refuse_uploads: int = 0  # answer the next N POST /upload/image (or mask) with HTTP 500, storing nothing
    megapixel_s: float = 0.0  # compute time per megapixel a node outputs (a CPU ComfyUI spends ~0.03 s)
    garbage: list[str] = field(default_factory=list)  # keys of GARBAGE

    def update(self, changes: dict[str, Any]) -> None:
        for key, value in changes.items():
            if not hasattr(self, key):
                raise KeyError(key)
            if key == "garbage" and not (isinstance(value, list) and set(value) <= set(GARBAGE)):
                raise KeyError(f"garbage: a list of {', '.join(GARBAGE)}")
            setattr(self, key, value)


@dataclass
class QueueItem:
    number: float
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs: list[str]

    def wire(self) -> list:
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs]


def now_ms() -> int:
    return int(time.time() * 1000)


class _Interrupted(Exception):
    pass


class Emulator:
    def __init__(self, base_dir: str, behaviour: Behaviour, *, checkpoints: list[str], vram_mb: int,
                 gpu: str | None = None) -> None:
        self.output_dir = os.path.join(base_dir, "output")
        self.input_dir = os.path.join(base_dir, "input")
        self.temp_dir = os.path.join(base_dir, "temp")
        for folder in (self.output_dir, self.input_dir, self.temp_dir):
            os.makedirs(folder, exist_ok=True)
        example = os.path.join(self.input_dir, "example.png")
        if not os.path.exists(example):  # ComfyUI ships one; the default LoadImage graph names it
            Image.new("RGB", (64, 64), (96, 128, 160)).save(example)
        self.behaviour = behaviour
        self.models = {"checkpoints": checkpoints}
        self.vram_total = vram_mb * 1024 * 1024
        self.gpu_index = gpu if gpu is not None else _visible_gpu()
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.socket_flags: dict[str, dict[str, Any]] = {}
        self.pending: list[tuple[float, int, QueueItem]] = []
        self.sequence = itertools.count()
        self.counter = 0
        self.running: QueueItem | None = None
        self.running_node: str | None = None
        self.history: dict[str, dict[str, Any]] = {}
        self.cache: dict[str, tuple[tuple, dict | None]] = {}
        self.interrupt_requested = False
        self.wakeup = asyncio.Event()
        self.outbox: asyncio.Queue[tuple[str | None, Any]] = asyncio.Queue(maxsize=64)
        self.loaded_model: str | None = None
        self.model_loads = 0  # checkpoint changes: what affinity scheduling saves
        self.prompts_run = 0
        self.temp_prefixes: dict[str, str] = {}  # node id -> its preview prefix, random like ComfyUI's

    # ------------------------------------------------------------------ messaging
    def queue_remaining(self) -> int:
        return len(self.pending) + (1 if self.running is not None else 0)

    async def _post(self, target: str | None, payload: Any) -> None:
        """Queue a frame for ``target`` (a sid, or None for every socket). Like ComfyUI, frames leave through
        one outbox drained by the publisher task, so an HTTP answer goes out before the frames it caused."""
        await self.outbox.put((target, payload))

    async def publisher(self) -> None:
        while True:
            target, payload = await self.outbox.get()
            sids = [target] if target is not None else list(self.sockets)
            for sid in sids:
                ws = self.sockets.get(sid)
                if ws is None or ws.closed:
                    continue
                try:
                    if payload is CLOSE_SOCKETS:
                        await ws.close()
                    elif isinstance(payload, bytes):
                        await ws.send_bytes(payload)
                    else:
                        await ws.send_str(payload)
                except (ConnectionError, RuntimeError):
                    pass

    async def send(self, kind: str, data: dict[str, Any], client_id: str | None, *,
                   broadcast_without_client: bool = False) -> None:
        text = json.dumps({"type": kind, "data": data})
        if client_id is not None:
            await self._post(client_id, text)
        elif broadcast_without_client:
            await self._post(None, text)

    async def broadcast_status(self) -> None:
        await self._post(None, json.dumps({"type": "status", "data": {"status": {"exec_info": {
            "queue_remaining": self.queue_remaining()}}}}))

    # ------------------------------------------------------------------ queue
    def enqueue(self, item: QueueItem) -> None:
        heapq.heappush(self.pending, (item.number, next(self.sequence), item))
        self.wakeup.set()

    async def worker(self) -> None:
        while True:
            while not self.pending:
                self.wakeup.clear()
                await self.wakeup.wait()
            _, _, item = heapq.heappop(self.pending)
            self.running = item
            try:
                await self.execute(item)
            finally:
                self.running = None
                self.running_node = None

    # ------------------------------------------------------------------ execution
    def _signatures(self, prompt: dict[str, Any]) -> dict[str, str]:
        memo: dict[str, str] = {}

        def sig(node_id: str) -> str:
            if node_id not in memo:
                node = prompt[node_id]
                parts = []
                for name, value in sorted(node.get("inputs", {}).items()):
                    if isinstance(value, list) and len(value) == 2 and str(value[0]) in prompt:
                        parts.append([name, sig(str(value[0])), value[1]])
                    else:
                        parts.append([name, value])
                memo[node_id] = json.dumps([node["class_type"], parts], sort_keys=True, default=str)
            return memo[node_id]

        for node_id in prompt:
            sig(node_id)
        return memo

    async def execute(self, item: QueueItem) -> None:
        pid, prompt, cid = item.prompt_id, item.prompt, item.extra_data.get("client_id")
        messages: list[list] = []
        await self.broadcast_status()
        if self.behaviour.crash_on_prompt:
            os._exit(3)

        async def lifecycle(kind: str, data: dict[str, Any], broadcast: bool = False) -> None:
            messages.append([kind, data])
            await self.send(kind, data, cid, broadcast_without_client=broadcast)

        self.interrupt_requested = False
        self.prompts_run += 1
        await lifecycle("execution_start", {"prompt_id": pid, "timestamp": now_ms()})
        if cid is not None and "ws_junk" in self.behaviour.garbage:
            for junk in junk_frames(pid):
                await self._post(cid, junk)
        if cid is not None and "huge_frame" in self.behaviour.garbage:
            huge = {"type": "progress", "data": {"prompt_id": pid, "junk": "x" * (65 << 20)}}
            await self._post(cid, json.dumps(huge))
        if self.behaviour.drop_ws_after_start:
            self.behaviour.drop_ws_after_start = False
            await self._post(None, CLOSE_SOCKETS)
        signatures = self._signatures(prompt)
        cached_ids = [n for n in prompt if signatures[n] in self.cache]
        await lifecycle("execution_cached", {"nodes": cached_ids, "prompt_id": pid, "timestamp": now_ms()})

        values: dict[str, tuple] = {}
        ui_outputs: dict[str, Any] = {}
        executed: list[str] = []
        states: dict[str, dict[str, Any]] = {}
        new_cache: dict[str, tuple[tuple, dict | None]] = {}
        outcome = "success"
        error_data: dict[str, Any] = {}

        async def progress_state() -> None:
            # send() encodes at once: the frame holds the states as they are now
            await self.send("progress_state", {"prompt_id": pid, "nodes": states}, cid,
                            broadcast_without_client=True)

        def node_state(node_id: str, value: Any, maximum: Any, state: str) -> None:
            states[node_id] = {"value": value, "max": maximum, "state": state, "node_id": node_id,
                               "prompt_id": pid, "display_node_id": node_id, "parent_node_id": None,
                               "real_node_id": node_id}

        for node_id in cached_ids:  # cached outputs feed the nodes that do run, and stay cached
            signature = signatures[node_id]
            values[node_id] = self.cache[signature][0]
            new_cache[signature] = self.cache[signature]
        order = ExecutionOrder(prompt, item.outputs, is_cached=lambda n: signatures[n] in self.cache,
                               is_output=lambda n: SPECS[prompt[n]["class_type"]].output_node)
        while (node_id := order.next()) is not None:
            order.finish(node_id)
            node = prompt[node_id]
            class_type = node["class_type"]
            signature = signatures[node_id]
            if signature in self.cache:
                ui = self.cache[signature][1]
                if ui is not None:
                    ui_outputs[node_id] = ui
                    await self.send("executed", {"node": node_id, "display_node": node_id, "output": ui,
                                                 "prompt_id": pid}, cid)
                    node_state(node_id, 1, 1, "finished")
                    await progress_state()
                continue
            node_state(node_id, 0.0, 1.0, "running")
            await progress_state()
            self.running_node = node_id
            await self.send("executing", {"node": node_id, "display_node": node_id, "prompt_id": pid}, cid)
            inputs = {name: (values[str(v[0])][v[1]] if isinstance(v, list) and len(v) == 2 else v)
                      for name, v in node.get("inputs", {}).items()}
            try:
                if self.interrupt_requested:
                    raise _Interrupted()
                outputs, ui = await self._run(node_id, class_type, inputs, item, cid, states, node_state,
                                              progress_state)
            except _Interrupted:
                outcome = "interrupted"
                error_data = {"prompt_id": pid, "node_id": node_id, "node_type": class_type,
                              "executed": list(executed), "timestamp": now_ms()}
                break
            except NodeError as exc:
                outcome = "error"
                error_data = self._error_data(pid, node_id, class_type, executed, exc, exc.exception_type, inputs)
                break
            except Exception as exc:  # a bug in a node implementation still reports like ComfyUI does
                outcome = "error"
                error_data = self._error_data(pid, node_id, class_type, executed, exc, type(exc).__name__, inputs)
                break
            values[node_id] = outputs
            new_cache[signature] = (outputs, ui)
            executed.append(node_id)
            if ui is not None:
                ui_outputs[node_id] = ui
                await self.send("executed", {"node": node_id, "display_node": node_id, "output": ui,
                                             "prompt_id": pid}, cid)
            reported = states[node_id]["max"]  # a node that reported progress finishes at its own max
            node_state(node_id, reported if reported != 1.0 else 1.0, reported, "finished")
            await progress_state()

        self.cache = new_cache
        if outcome == "success":
            await lifecycle("execution_success", {"prompt_id": pid, "timestamp": now_ms()})
        elif outcome == "error":
            await lifecycle("execution_error", error_data)
        else:
            await lifecycle("execution_interrupted", error_data, broadcast=True)
        extra = {k: v for k, v in item.extra_data.items() if k not in ("auth_token_comfy_org", "api_key_comfy_org")}
        self.history[pid] = {
            "prompt": [item.number, pid, prompt, extra, item.outputs],
            "outputs": ui_outputs,
            "status": {"status_str": "success" if outcome == "success" else "error",
                       "completed": outcome == "success", "messages": messages},
            "meta": {n: {"node_id": n, "display_node": n, "parent_node": None, "real_node_id": n}
                     for n in ui_outputs},
        }
        while len(self.history) > 10000:
            self.history.pop(next(iter(self.history)))
        self.running = None
        self.running_node = None
        await self.broadcast_status()
        await self.send("executing", {"node": None, "prompt_id": pid}, cid)

    def _error_data(self, pid: str, node_id: str, class_type: str, executed: list[str], exc: Exception,
                    exception_type: str, inputs: dict[str, Any]) -> dict[str, Any]:
        return {"prompt_id": pid, "node_id": node_id, "node_type": class_type, "executed": list(executed),
                "exception_message": str(exc), "exception_type": exception_type,
                "traceback": [f"  File \"emulator\", in {class_type}\n"],
                "current_inputs": {k: [repr(v)[:200]] for k, v in inputs.items()},
                "current_outputs": [], "timestamp": now_ms()}

    async def _run(self, node_id: str, class_type: str, inputs: dict[str, Any], item: QueueItem,
                   cid: str | None, states: dict[str, Any], node_state: Any, progress_state: Any,
                   ) -> tuple[tuple, dict | None]:
        behaviour = self.behaviour
        pid = item.prompt_id
        if behaviour.hang:
            while True:  # a hung backend: HTTP keeps answering, the node never ends
                await asyncio.sleep(3600)
        if class_type in behaviour.fail_node_types:
            raise NodeError(f"emulated failure in {class_type} (node {node_id})")
        if class_type == "CheckpointLoaderSimple" and self.loaded_model != inputs.get("ckpt_name"):
            await asyncio.sleep(behaviour.model_load_s)
            self.loaded_model = inputs.get("ckpt_name")
            self.model_loads += 1
        if behaviour.node_s:
            await asyncio.sleep(behaviour.node_s)

        async def report_progress(value: int, maximum: int, preview: Image.Image | None) -> None:
            if class_type == "KSampler" and behaviour.step_s:
                await asyncio.sleep(behaviour.step_s)
            if self.interrupt_requested:
                raise _Interrupted()
            node_state(node_id, value, maximum, "running")
            await progress_state()
            metadata_first = preview is not None and cid is not None and \
                self.socket_flags.get(cid, {}).get("supports_preview_metadata") is True
            frame = _preview_frame(preview, node_id, pid, metadata_first) if preview is not None else None
            if frame is not None and metadata_first:
                await self._send_binary(frame, cid)
            await self.send("progress", {"value": value, "max": maximum, "prompt_id": pid, "node": node_id}, cid,
                            broadcast_without_client=True)
            if frame is not None and not metadata_first:
                await self._send_binary(frame, cid)

        async def send_text(text: str) -> None:
            encoded = node_id.encode()
            frame = struct.pack(">I", 3) + struct.pack(">I", len(encoded)) + encoded + text.encode()
            await self._send_binary(frame, cid)

        ctx = Context(output_dir=self.output_dir, input_dir=self.input_dir, temp_dir=self.temp_dir,
                      temp_prefix=self._temp_prefix(node_id), prompt=item.prompt,
                      extra_pnginfo=item.extra_data.get("extra_pnginfo"), report_progress=report_progress,
                      send_text=send_text)
        outputs, ui = await run_node(class_type, inputs, ctx)
        if behaviour.megapixel_s:
            pixels = sum(im.size[0] * im.size[1] for out in outputs if isinstance(out, list)
                         for im in out if isinstance(im, Image.Image))
            await asyncio.sleep(behaviour.megapixel_s * pixels / 1e6)
        return outputs, ui

    def _temp_prefix(self, node_id: str) -> str:
        if node_id not in self.temp_prefixes:
            self.temp_prefixes[node_id] = "ComfyUI_temp_" + "".join(random.choices(string.ascii_lowercase, k=5))
        return self.temp_prefixes[node_id]

    async def _send_binary(self, frame: bytes, cid: str | None) -> None:
        await self._post(cid, frame)

    # ------------------------------------------------------------------ system figures
    def system_stats(self) -> dict[str, Any]:
        ram_total, ram_free = _memory()
        system = {"os": "posix", "ram_total": ram_total, "ram_free": ram_free, "comfyui_version": "0.3.64",
                  "required_frontend_version": "1.27.10", "installed_templates_version": "0.1.95",
                  "required_templates_version": "0.1.95", "python_version": sys.version,
                  "pytorch_version": "emulated", "embedded_python": False, "argv": ["comfyart.emulator"]}
        if self.gpu_index is None:
            device = {"name": "cpu", "type": "cpu", "index": None, "vram_total": ram_total, "vram_free": ram_free,
                      "torch_vram_total": ram_total, "torch_vram_free": ram_free}
        else:
            used = (2 << 30 if self.loaded_model else 0) + (1 << 30 if self.running else 0)
            free = max(0, self.vram_total - used)
            device = {"name": f"cuda:0 Emulated GPU {self.gpu_index} : cudaMallocAsync", "type": "cuda", "index": 0,
                      "vram_total": self.vram_total, "vram_free": free,
                      "torch_vram_total": self.vram_total, "torch_vram_free": free}
        return {"system": system, "devices": [device]}


def _visible_gpu() -> str | None:
    for var in ("NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"):  # the host GPU index first
        value = os.environ.get(var, "").strip()
        if value and value not in ("void", "none", "-1", "all"):
            return value.split(",")[0]
    return None


def _memory() -> tuple[int, int]:
    total = free = 0
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                key, value = line.split(":", 1)
                if key == "MemTotal":
                    total = int(value.split()[0]) * 1024
                elif key == "MemAvailable":
                    free = int(value.split()[0]) * 1024
    except OSError:
        pass
    return total, free


def _preview_frame(image: Image.Image, node_id: str, prompt_id: str, with_metadata: bool) -> bytes:
    import io
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    data = buffer.getvalue()
    if not with_metadata:
        return struct.pack(">II", 1, 2) + data
    metadata = json.dumps({"node_id": node_id, "prompt_id": prompt_id, "display_node_id": node_id,
                           "parent_node_id": None, "real_node_id": node_id, "image_type": "image/png"}).encode()
    return struct.pack(">II", 4, len(metadata)) + metadata + data


def _reencode(path: str, preview: str | None, channel: str) -> tuple[bytes, str]:
    """/view's ``preview=jpeg|webp[;quality]`` and ``channel=rgb|a`` options."""
    import io
    with Image.open(path) as opened:
        image = opened.convert("RGBA")
    if channel == "rgb":
        image = image.convert("RGB")
    elif channel == "a":
        alpha = image.getchannel("A")
        image = Image.merge("RGBA", (alpha, alpha, alpha, alpha))
    buffer = io.BytesIO()
    if preview:
        kind, _, quality = preview.partition(";")
        fmt = "WEBP" if kind == "webp" else "JPEG"
        image.convert("RGB").save(buffer, format=fmt, quality=int(quality) if quality.isdigit() else 90)
        return buffer.getvalue(), f"image/{fmt.lower()}"
    image.save(buffer, format="PNG")
    return buffer.getvalue(), "image/png"


# ====================================================================== HTTP layer

def junk_frames(prompt_id: str) -> list[Any]:
    """What a broken backend might send on its socket in the middle of a prompt."""
    return [
        "this is not JSON",
        "[1, 2, 3]",
        json.dumps({"type": "progress", "data": "a string"}),
        json.dumps({"type": "progress", "data": {"prompt_id": ["a", "list"], "value": 1, "max": 2}}),
        json.dumps({"type": "progress", "data": {"prompt_id": {"a": "dict"}, "value": 1, "max": 2}}),
        json.dumps({"type": "progress", "data": {"prompt_id": prompt_id, "node": ["x"], "value": "lots",
                                                 "max": None}}),
        json.dumps({"type": "progress", "data": {"prompt_id": prompt_id, "node": "1", "value": 1e308, "max": 0}}),
        json.dumps({"type": "executing", "data": {"prompt_id": prompt_id, "node": {"not": "an id"}}}),
        json.dumps({"type": "execution_cached", "data": {"prompt_id": prompt_id, "nodes": "not a list"}}),
        json.dumps({"type": "executed", "data": {"prompt_id": prompt_id, "node": None, "output": "not a dict"}}),
        json.dumps({"type": "executed", "data": {"prompt_id": prompt_id, "node": "9",
                                                 "output": {"images": ["x", {"filename": 3}, None]}}}),
        json.dumps({"type": "execution_start", "data": {"prompt_id": "someone-else"}}),
        json.dumps({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": "many"}}}}),
        json.dumps({"type": None, "data": {}}),
        "[" * DEEP + "]" * DEEP,
        json.dumps({"type": "progress", "data": {"prompt_id": prompt_id, "deep": json.loads("[" * 500 + "]" * 500)}}),
        b"",
        b"\x00\x01\x02",
        b"\x00\x00\x00\x01\x00\x00\x00\x02not an image",
    ]


def _failure() -> web.Response:
    return web.Response(status=500, text=FAILURE_TEXT)


async def _json_body(request: web.Request) -> Any:
    raw = await request.read()
    return json.loads(raw) if raw else None


async def _json_object(request: web.Request) -> dict[str, Any] | None:
    """The body as a JSON object, or None where ComfyUI answers 500 (not JSON, or not an object)."""
    try:
        body = await _json_body(request)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def build_app(emu: Emulator) -> web.Application:
    routes = web.RouteTableDef()

    @routes.get("/ws")
    async def websocket(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        sid = request.query.get("clientId") or uuid.uuid4().hex
        emu.sockets[sid] = ws
        emu.socket_flags.pop(sid, None)
        try:
            await ws.send_str(json.dumps({"type": "status", "data": {
                "status": {"exec_info": {"queue_remaining": emu.queue_remaining()}}, "sid": sid}}))
            running = emu.running
            if running is not None and running.extra_data.get("client_id") == sid and emu.running_node:
                await ws.send_str(json.dumps({"type": "executing", "data": {"node": emu.running_node}}))
            first = True
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    continue
                if first:
                    first = False
                    try:
                        parsed = json.loads(message.data)
                    except ValueError:
                        continue
                    if isinstance(parsed, dict) and parsed.get("type") == "feature_flags":
                        emu.socket_flags[sid] = parsed.get("data") or {}
                        await ws.send_str(json.dumps({"type": "feature_flags", "data": SERVER_FEATURES}))
        finally:
            if emu.sockets.get(sid) is ws:
                del emu.sockets[sid]
        return ws

    @routes.get("/prompt")
    async def prompt_info(request: web.Request) -> web.Response:
        return web.json_response({"exec_info": {"queue_remaining": emu.queue_remaining()}})

    @routes.post("/prompt")
    async def post_prompt(request: web.Request) -> web.Response:
        body = await _json_object(request)
        if body is None:
            return _failure()
        if emu.behaviour.refuse_prompts > 0:
            emu.behaviour.refuse_prompts -= 1
            return _failure()
        if "number" in body:
            number: float = float(body["number"])
        else:
            number = emu.counter
            if body.get("front"):
                number = -number
            emu.counter += 1
        if "prompt" not in body:
            error = {"type": "no_prompt", "message": "No prompt provided", "details": "No prompt provided",
                     "extra_info": {}}
            return web.json_response({"error": error, "node_errors": {}}, status=400)
        prompt = body["prompt"]
        if not isinstance(prompt, dict) or not all(isinstance(n, dict) for n in prompt.values()):
            return _failure()
        prompt_id = str(body.get("prompt_id") or uuid.uuid4())
        targets = body.get("partial_execution_targets")
        ok, error, outputs, node_errors = validate_prompt(prompt, targets, emu.input_dir, emu.models)
        if not ok:
            return web.json_response({"error": error, "node_errors": node_errors}, status=400)
        extra_data = dict(body.get("extra_data") or {})
        if "client_id" in body:
            extra_data["client_id"] = body["client_id"]
        emu.enqueue(QueueItem(number, prompt_id, prompt, extra_data, outputs))
        await emu.broadcast_status()
        if emu.behaviour.drop_prompt_answers > 0:
            emu.behaviour.drop_prompt_answers -= 1
            if request.transport is not None:
                request.transport.close()  # the prompt is queued, but its answer is lost on the way
            raise ConnectionResetError("answer dropped on purpose")
        if "prompt_answer" in emu.behaviour.garbage:
            return web.Response(text="<html><body>Bad Gateway?</body></html>", content_type="text/html")
        return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": node_errors})

    @routes.get("/queue")
    async def get_queue(request: web.Request) -> web.Response:
        running = [emu.running.wire()] if emu.running else []
        return web.json_response({"queue_running": running, "queue_pending": [e[2].wire() for e in emu.pending]})

    @routes.post("/queue")
    async def post_queue(request: web.Request) -> web.Response:
        body = await _json_object(request)
        if body is None:
            return _failure()
        changed = False
        if body.get("clear"):
            emu.pending.clear()
            changed = True
        if "delete" in body:
            doomed = set(body["delete"])
            before = len(emu.pending)
            emu.pending[:] = [e for e in emu.pending if e[2].prompt_id not in doomed]
            heapq.heapify(emu.pending)
            changed = changed or before != len(emu.pending)
        if changed:
            await emu.broadcast_status()
        return web.Response(status=200)

    @routes.post("/interrupt")
    async def interrupt(request: web.Request) -> web.Response:
        try:
            body = await _json_body(request)
        except ValueError:
            body = None
        target = body.get("prompt_id") if isinstance(body, dict) else None
        if emu.running is not None and (target is None or target == emu.running.prompt_id):
            emu.interrupt_requested = True
        return web.Response(status=200)

    def garbled_history() -> web.Response | None:
        if "history" in emu.behaviour.garbage:
            return web.Response(text='{"broken": [', content_type="application/json")
        if "deep_json" in emu.behaviour.garbage:
            return web.Response(text='{"a": ' + "[" * DEEP + "]" * DEEP + "}", content_type="application/json")
        return None

    @routes.get("/history")
    async def history(request: web.Request) -> web.Response:
        garbled = garbled_history()
        if garbled is not None:
            return garbled
        try:
            max_items = int(request.query["max_items"]) if "max_items" in request.query else None
            offset = int(request.query.get("offset", -1))
        except ValueError:
            return _failure()
        items = list(emu.history.items())
        if offset >= 0:
            items = items[offset:offset + max_items] if max_items is not None else items[offset:]
        elif max_items is not None:
            items = items[-max_items:] if max_items > 0 else []
        return web.json_response(dict(items))

    @routes.get("/history/{prompt_id}")
    async def history_one(request: web.Request) -> web.Response:
        pid = request.match_info["prompt_id"]
        garbled = garbled_history()
        if garbled is not None:
            return garbled
        return web.json_response({pid: emu.history[pid]} if pid in emu.history else {})

    @routes.post("/history")
    async def post_history(request: web.Request) -> web.Response:
        body = await _json_object(request)
        if body is None:
            return _failure()
        if body.get("clear"):
            emu.history.clear()
        for pid in body.get("delete", []):
            emu.history.pop(pid, None)
        return web.Response(status=200)

    @routes.get("/view")
    async def view(request: web.Request) -> web.StreamResponse:
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
        bases = {"output": emu.output_dir, "input": emu.input_dir, "temp": emu.temp_dir}
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
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        disposition = {"Content-Disposition": f'filename="{filename}"'}
        preview, channel = request.query.get("preview"), request.query.get("channel", "rgba")
        if content_type.startswith("image/") and (preview or channel != "rgba"):
            data, content_type = _reencode(path, preview, channel)
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
        if emu.behaviour.refuse_uploads > 0:
            emu.behaviour.refuse_uploads -= 1
            return _failure()
        try:
            form = await request.post()
        except ValueError:
            return web.Response(status=400)
        image = form.get("image")
        if image is None or not hasattr(image, "file"):
            return web.Response(status=400)
        kind = str(form.get("type", "input"))
        bases = {"output": emu.output_dir, "input": emu.input_dir, "temp": emu.temp_dir}
        base = os.path.abspath(bases.get(kind, emu.input_dir))
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

    @routes.post("/free")
    async def free(request: web.Request) -> web.Response:
        body = await _json_object(request)
        if body is None:
            return _failure()
        if body.get("free_memory"):
            emu.cache.clear()
        if body.get("unload_models") or body.get("free_memory"):
            emu.loaded_model = None
        return web.Response(status=200)

    def input_files() -> list[str]:
        return sorted(f for f in os.listdir(emu.input_dir) if os.path.isfile(os.path.join(emu.input_dir, f)))

    @routes.get("/object_info")
    async def object_info(request: web.Request) -> web.Response:
        files = input_files()
        return web.json_response({name: spec.object_info(files, emu.models) for name, spec in SPECS.items()})

    @routes.get("/object_info/{node_class}")
    async def object_info_one(request: web.Request) -> web.Response:
        name = request.match_info["node_class"]
        spec = SPECS.get(name)
        return web.json_response({name: spec.object_info(input_files(), emu.models)} if spec else {})

    @routes.get("/system_stats")
    async def system_stats(request: web.Request) -> web.Response:
        return web.json_response(emu.system_stats())

    @routes.get("/features")
    async def features(request: web.Request) -> web.Response:
        return web.json_response(SERVER_FEATURES)

    @routes.get("/models")
    async def models(request: web.Request) -> web.Response:
        return web.json_response(MODEL_FOLDERS)

    @routes.get("/models/{folder}")
    async def models_in(request: web.Request) -> web.Response:
        folder = request.match_info["folder"]
        if folder not in MODEL_FOLDERS:
            return web.Response(status=404)
        return web.json_response(emu.models.get(folder, []))

    def constant(value: Any) -> Any:
        async def handler(request: web.Request) -> web.Response:
            return web.json_response(value)
        return handler

    @routes.get("/userdata")
    async def userdata(request: web.Request) -> web.Response:
        return web.Response(status=404, text="Directory not found")

    for path, value in (("/embeddings", []), ("/extensions", []), ("/settings", {}), ("/i18n", {}),
                        ("/users", {"storage": "server", "migrated": True}), ("/workflow_templates", {}),
                        ("/v2/userdata", [])):
        routes.get(path)(constant(value))

    @routes.get("/emulator/control")
    async def get_control(request: web.Request) -> web.Response:
        return web.json_response(emu.behaviour.__dict__)

    @routes.get("/emulator/stats")
    async def get_stats(request: web.Request) -> web.Response:
        return web.json_response({"model_loads": emu.model_loads, "prompts_run": emu.prompts_run,
                                  "loaded_model": emu.loaded_model})

    @routes.post("/emulator/control")
    async def post_control(request: web.Request) -> web.Response:
        try:
            emu.behaviour.update(await request.json())
        except (ValueError, KeyError, AttributeError) as exc:
            return web.json_response({"error": f"bad control: {exc}"}, status=400)
        return web.json_response(emu.behaviour.__dict__)

    internal = web.RouteTableDef()  # the frontend's routes; ComfyUI does not mirror these under /api

    @internal.get("/internal/logs/raw")
    async def logs_raw(request: web.Request) -> web.Response:
        return web.json_response({"entries": [], "size": {"cols": 80, "rows": 24}})

    @internal.get("/internal/folder_paths")
    async def folder_paths(request: web.Request) -> web.Response:
        return web.json_response({"checkpoints": [os.path.join(os.path.dirname(emu.output_dir), "models",
                                                               "checkpoints")]})

    @internal.get("/internal/files/{kind}")
    async def internal_files(request: web.Request) -> web.Response:
        bases = {"output": emu.output_dir, "input": emu.input_dir, "temp": emu.temp_dir}
        base = bases.get(request.match_info["kind"])
        if base is None:
            return web.Response(status=404)
        return web.json_response(sorted(os.listdir(base)))

    app = web.Application(middlewares=[_origin_check, _options_ok, _empty_not_found],
                          client_max_size=SERVER_FEATURES["max_upload_size"])
    app.add_routes(internal)
    app.add_routes(routes)
    # every route is mirrored under /api, as ComfyUI does
    api_routes = web.RouteTableDef()
    for route in routes:
        if isinstance(route, web.RouteDef):
            api_routes.route(route.method, "/api" + route.path)(route.handler)
    app.add_routes(api_routes)

    async def index(request: web.Request) -> web.Response:
        return web.Response(text="<!doctype html><html><head><title>ComfyUI</title></head>"
                                 "<body>comfyart ComfyUI emulator</body></html>", content_type="text/html")
    app.router.add_get("/", index)
    app.router.add_get("/api/", index)

    async def start_worker(app: web.Application) -> None:
        loop = asyncio.get_running_loop()
        app["tasks"] = [loop.create_task(emu.worker(), name="emulator-worker"),
                        loop.create_task(emu.publisher(), name="emulator-publisher")]

    async def stop_worker(app: web.Application) -> None:
        for task in app["tasks"]:
            task.cancel()
        for ws in list(emu.sockets.values()):
            await ws.close()

    app.on_startup.append(start_worker)
    app.on_shutdown.append(stop_worker)
    return app


_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


@web.middleware
async def _origin_check(request: web.Request, handler: Any) -> web.StreamResponse:
    origin = request.headers.get("Origin")
    host = request.headers.get("Host", "")
    if origin and host:
        host_name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
        origin_host = origin.split("://", 1)[-1].split("/", 1)[0]
        if host_name in _LOOPBACK_HOSTS and origin_host != host:
            return web.Response(status=403)
    return await handler(request)


@web.middleware
async def _empty_not_found(request: web.Request, handler: Any) -> web.StreamResponse:
    """An unknown route answers 404 with an empty body, as ComfyUI's server does."""
    try:
        return await handler(request)
    except web.HTTPNotFound:
        return web.Response(status=404, content_type="application/octet-stream")


@web.middleware
async def _options_ok(request: web.Request, handler: Any) -> web.StreamResponse:
    if request.method == "OPTIONS":
        return web.Response(status=200)
    return await handler(request)
