"""The ``Emulator``: one emulated ComfyUI server's state. One worker runs one prompt at a time from a heap ordered
by ``number``; frames leave through one outbox; it keeps the history, the node cache and the figures that
/system_stats reports.
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import os
import random
import string
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from PIL import Image

from comfyart.emulator.behaviour import CLOSE_SOCKETS, Behaviour
from comfyart.emulator.execution import PromptRun, QueueItem
from comfyart.emulator.inventory import ModelFolders, node_classes

NEWEST_VERSION = "0.38.1"  # comfyui_version.py of the newest indexed Comfy-Org/ComfyUI
DEFAULT_CHECKPOINTS = ["v1-5-pruned-emaonly-fp16.safetensors", "sd_xl_base_1.0.safetensors",
                       "dreamshaper_8.safetensors", "realisticVision_v60.safetensors"]
# the files the web editor's default workflow (Z-Image Turbo) loads, by model folder: a plain emulator runs it
DEFAULT_MODELS: Mapping[str, Sequence[str]] = {"text_encoders": ["qwen_3_4b.safetensors"], "vae": ["ae.safetensors"],
                                               "diffusion_models": ["z_image_turbo_bf16.safetensors"]}


@dataclass(frozen=True)
class Flavour:
    """Which ComfyUI the emulator is: 0.3.64 by default; ``newest`` the newest server (see ``newest.py``).
    ``preview_method`` is ComfyUI's ``--preview-method`` (the launch default), ``devices`` how many GPUs
    /system_stats lists (newest lists every one), ``extensions`` the node packs' web folders by pack name (ComfyUI's
    EXTENSION_WEB_DIRS) and ``demo_pack`` serves the built-in demo pack (``frontend.DEMO_PACK``)."""

    newest: bool = False
    preview_method: str = "none"
    devices: int = 1
    extensions: tuple[tuple[str, str], ...] = ()
    demo_pack: bool = False


class Emulator:
    def __init__(self, base_dir: str, behaviour: Behaviour, *, checkpoints: list[str], vram_mb: int,
                 gpu: str | None = None, without_nodes: Iterable[str] = (), flavour: Flavour = Flavour(),
                 models: Mapping[str, Sequence[str]] = DEFAULT_MODELS) -> None:
        self.flavour = flavour
        self.models_dir = os.path.join(base_dir, "models")
        self.output_dir = os.path.join(base_dir, "output")
        self.input_dir = os.path.join(base_dir, "input")
        self.temp_dir = os.path.join(base_dir, "temp")
        for folder in (self.output_dir, self.input_dir, self.temp_dir):
            os.makedirs(folder, exist_ok=True)
        example = os.path.join(self.input_dir, "example.png")
        if not os.path.exists(example):  # ComfyUI ships one; the default LoadImage graph names it
            Image.new("RGB", (64, 64), (96, 128, 160)).save(example)
        self.behaviour = behaviour
        self.models = ModelFolders(self.models_dir)
        self.models.seed("checkpoints", checkpoints)
        for folder, names in models.items():
            self.models.seed(folder, names)
        self.nodes = node_classes(without_nodes)
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
        self.cache: dict[str, tuple[tuple[Any, ...], dict[str, Any] | None]] = {}
        self.interrupt_requested = False
        self.wakeup = asyncio.Event()
        self.outbox: asyncio.Queue[tuple[str | None, Any]] = asyncio.Queue(maxsize=64)
        self.loaded_model: str | None = None
        self.model_loads = 0  # checkpoint changes: what affinity scheduling saves
        self.prompts_run = 0
        self.history_lookups = 0  # GET /history/{id}: what trusting the socket saves
        self.temp_prefixes: dict[str, str] = {}  # node id -> its preview prefix, random like ComfyUI's

    def folders(self) -> dict[str, str]:
        """The three folders by the ``type`` a request names."""
        return {"output": self.output_dir, "input": self.input_dir, "temp": self.temp_dir}

    # ------------------------------------------------------------------ messaging
    def queue_remaining(self) -> int:
        return len(self.pending) + (1 if self.running is not None else 0)

    async def post(self, target: str | None, payload: Any) -> None:
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
            await self.post(client_id, text)
        elif broadcast_without_client:
            await self.post(None, text)

    async def broadcast_status(self) -> None:
        await self.post(None, json.dumps({"type": "status", "data": {"status": {"exec_info": {
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

    async def execute(self, item: QueueItem) -> None:
        await PromptRun(self, item).run()

    def temp_prefix(self, node_id: str) -> str:
        if node_id not in self.temp_prefixes:
            self.temp_prefixes[node_id] = "ComfyUI_temp_" + "".join(random.choices(string.ascii_lowercase, k=5))
        return self.temp_prefixes[node_id]

    # ------------------------------------------------------------------ system figures
    def system_stats(self) -> dict[str, Any]:
        ram_total, ram_free = _memory()
        newest = self.flavour.newest
        system: dict[str, Any] = {
            "os": sys.platform if newest else "posix", "ram_total": ram_total, "ram_free": ram_free,
            "comfyui_version": NEWEST_VERSION if newest else "0.3.64",
            "required_frontend_version": "1.53.6" if newest else "1.27.10",
            "installed_templates_version": "0.1.95", "required_templates_version": "0.1.95"}
        if newest:
            # a list of {name, installed, required}, as newer ComfyUI answers it (the 1.58 page iterates it)
            system["comfy_package_versions"] = [
                {"name": "comfyui-workflow-templates", "installed": "0.1.95", "required": "0.1.95"},
                {"name": "comfyui-embedded-docs", "installed": "0.2.6", "required": "0.2.6"}]
        system.update({"python_version": sys.version, "pytorch_version": "emulated", "embedded_python": False})
        if newest:
            system["deploy_environment"] = "local"
        system["argv"] = ["comfyart.emulator"]
        return {"system": system, "devices": self._devices(ram_total, ram_free)}

    def _devices(self, ram_total: int, ram_free: int) -> list[dict[str, Any]]:
        count = self.flavour.devices if self.flavour.newest else 1
        if self.gpu_index is None and count == 1:
            return [{"name": "cpu", "type": "cpu", "index": None, "vram_total": ram_total, "vram_free": ram_free,
                     "torch_vram_total": ram_total, "torch_vram_free": ram_free}]
        used = (2 << 30 if self.loaded_model else 0) + (1 << 30 if self.running else 0)
        devices = []
        # 0.3.64 names its one device; the newest server lists every one, the primary (which runs) first
        for index in range(count):
            free = max(0, self.vram_total - used) if index == 0 else self.vram_total
            host_gpu = self.gpu_index if index == 0 and self.gpu_index is not None else index
            devices.append({"name": f"cuda:{index} Emulated GPU {host_gpu} : cudaMallocAsync", "type": "cuda",
                            "index": index, "vram_total": self.vram_total, "vram_free": free,
                            "torch_vram_total": self.vram_total, "torch_vram_free": free})
        return devices


def app_key(name: str, kind: Any) -> Any:
    """A typed key of an app's state (``web.AppKey``); Debian bookworm's aiohttp 3.8, which the emulator image runs
    on, has only string keys."""
    return web.AppKey(name, kind) if hasattr(web, "AppKey") else name


EMULATOR: web.AppKey[Emulator] = app_key("emulator", Emulator)  # how a handler reaches its emulator


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
