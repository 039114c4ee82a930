"""Synthetic ComfyUI fleets for bench/inventory.py: an ``/object_info`` of about 2 MB per backend, as a real ComfyUI
with a few custom node packs and a models volume answers, and a process that serves them on consecutive ports.

A document is the emulator's catalogue (``comfyart.emulator.catalogue.SPECS``), ComfyUI's usual model loaders, and
enough custom node classes (inputs with tooltips, small enums, and now and then a list of model files) to reach
``TARGET_BYTES``. Backend ``i`` of a "different" fleet holds its own share of each model folder (as real fleets
differ: each machine its own downloads); every backend of a "same" fleet holds backend 0's, as containers of one
image with one models volume do. The first ``COMMON`` files of each folder are on every backend.

    python3 bench/object_info_fleet.py --port N --count K --kind same|different
"""
from __future__ import annotations

import argparse
import asyncio
import functools
import json
import random
import signal
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # comfyart, from a checkout
from comfyart.emulator.catalogue import SPECS  # noqa: E402
from comfyart.emulator.engine import DEFAULT_CHECKPOINTS  # noqa: E402

TARGET_BYTES = 2_000_000
POOLS = {"checkpoints": 120, "loras": 900, "vae": 24, "controlnet": 60, "upscale_models": 30, "text_encoders": 20,
         "diffusion_models": 40, "embeddings": 150}
HELD = 0.6  # of each folder's pool, a backend of a "different" fleet holds this share
COMMON = 8  # the first files of each folder, on every backend: what the benchmark's tasks load
LOADERS = {"LoraLoader": ("lora_name", "loras"), "LoraLoaderModelOnly": ("lora_name", "loras"),
           "VAELoader": ("vae_name", "vae"), "ControlNetLoader": ("control_net_name", "controlnet"),
           "UpscaleModelLoader": ("model_name", "upscale_models"), "CLIPLoader": ("clip_name", "text_encoders"),
           "UNETLoader": ("unet_name", "diffusion_models")}
WORDS = ("photo", "anime", "cinematic", "detail", "portrait", "landscape", "pixel", "ink", "neon", "retro", "sharp",
         "soft", "dark", "film", "clay", "paper", "glass", "steel", "forest", "ocean")


@functools.cache
def pool(folder: str) -> tuple[str, ...]:
    """Every file of ``folder`` that some backend may hold, the checkpoints the benchmarks use first."""
    rng = random.Random(folder)
    names = [f"{rng.choice(('sd15', 'sdxl', 'flux', 'pony'))}/{rng.choice(WORDS)}_{rng.choice(WORDS)}_{i}"
             f"_v{rng.randint(1, 12)}.safetensors" for i in range(POOLS[folder])]
    if folder == "checkpoints":
        names = list(DEFAULT_CHECKPOINTS) + names[len(DEFAULT_CHECKPOINTS):]
    return tuple(names)


def models_of(backend: int) -> dict[str, list[str]]:
    """Backend ``backend``'s files, by folder: the common ones and its own share of the rest."""
    rng = random.Random(backend)
    held = {}
    for folder in POOLS:
        names = pool(folder)
        rest = names[COMMON:]
        held[folder] = sorted(names[:COMMON] + tuple(rng.sample(rest, int(len(rest) * HELD))))
    return held


def _custom_node(index: int, rng: random.Random) -> tuple[str, dict[str, Any]]:
    """A custom node class: its inputs, where ``("models", folder)`` stands for that folder's list."""
    inputs: dict[str, Any] = {}
    for slot in range(rng.randint(3, 10)):
        kind = rng.random()
        tooltip = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 18)))
        if kind < 0.3:
            inputs[f"amount_{slot}"] = ["INT", {"default": 0, "min": 0, "max": 4096, "step": 8, "tooltip": tooltip}]
        elif kind < 0.55:
            inputs[f"strength_{slot}"] = ["FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01,
                                                    "tooltip": tooltip}]
        elif kind < 0.7:
            inputs[f"text_{slot}"] = ["STRING", {"multiline": rng.random() < 0.5, "default": "", "tooltip": tooltip}]
        elif kind < 0.9:
            inputs[f"mode_{slot}"] = [[f"{rng.choice(WORDS)}_{n}" for n in range(rng.randint(2, 9))],
                                      {"tooltip": tooltip}]
        else:
            inputs[f"link_{slot}"] = [rng.choice(("IMAGE", "LATENT", "MODEL", "CLIP", "CONDITIONING", "MASK")), {}]
    if rng.random() < 0.05:  # a custom loader: lists a model folder, as many packs do
        folder = rng.choice(("loras", "loras", "checkpoints", "checkpoints", "vae", "controlnet", "upscale_models"))
        inputs[f"{folder.rstrip('s')}_name"] = ("models", folder)
    pack = f"pack{index // 25}"
    return f"{pack}.{rng.choice(WORDS).title()}{rng.choice(WORDS).title()}{index}", {
        "inputs": inputs, "outputs": [rng.choice(("IMAGE", "LATENT", "MODEL", "STRING")) for _ in range(
            rng.randint(1, 3))], "category": f"{pack}/{rng.choice(WORDS)}",
        "description": " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 30))),
        "python_module": f"custom_nodes.{pack}"}


def _entry(name: str, spec: dict[str, Any], models: dict[str, list[str]]) -> dict[str, Any]:
    required = {k: [list(models[v[1]]), {}] if isinstance(v, tuple) else v for k, v in spec["inputs"].items()}
    outputs = spec["outputs"]
    return {"input": {"required": required}, "input_order": {"required": list(required)}, "output": outputs,
            "output_is_list": [False] * len(outputs), "output_name": outputs, "name": name, "display_name": name,
            "description": spec["description"], "python_module": spec["python_module"],
            "category": spec["category"], "output_node": False}


@functools.cache
def _custom_nodes() -> tuple[tuple[str, dict[str, Any]], ...]:
    """As many custom node classes as bring backend 0's document to ``TARGET_BYTES``."""
    rng = random.Random(21)
    size = len(json.dumps(_base(models_of(0))))
    nodes = []
    while size < TARGET_BYTES:
        name, spec = _custom_node(len(nodes), rng)
        nodes.append((name, spec))
        size += len(json.dumps(_entry(name, spec, models_of(0)))) + len(name) + 6
    return tuple(nodes)


def _base(models: dict[str, list[str]]) -> dict[str, Any]:
    info = {name: spec.object_info([], models) for name, spec in SPECS.items()}
    for name, (field, folder) in LOADERS.items():
        spec = {"inputs": {field: ("models", folder)}, "outputs": ["MODEL"], "category": "loaders",
                "description": f"Loads a model from models/{folder}.", "python_module": "nodes"}
        info[name] = _entry(name, spec, models)
    return info


def document(backend: int) -> dict[str, Any]:
    """Backend ``backend``'s ``/object_info``."""
    models = models_of(backend)
    info = _base(models)
    for name, spec in _custom_nodes():
        info[name] = _entry(name, spec, models)
    return info


def embeddings(backend: int) -> list[str]:
    return [name.rsplit("/", 1)[-1].removesuffix(".safetensors") for name in models_of(backend)["embeddings"]]


# enough of ComfyUI's /system_stats for a daemon's health checks, and its /extensions (none) for the web editor's
# start: bench/editor.py runs a daemon and the editor over these servers
SYSTEM_STATS = json.dumps({"system": {"os": "posix", "comfyui_version": "0.3.64", "ram_total": 0, "ram_free": 0},
                           "devices": []}).encode()


async def serve(port: int, count: int, kind: str) -> None:
    """``count`` servers on ``port``.. answering GET /object_info, /embeddings, /system_stats and /extensions, until
    SIGTERM."""
    runners = []
    bodies: dict[int, tuple[bytes, bytes]] = {}
    for index in range(count):
        source = index if kind == "different" else 0
        if source not in bodies:
            bodies[source] = (json.dumps(document(source)).encode(), json.dumps(embeddings(source)).encode())
        info, listed = bodies[source]
        app = web.Application()
        app.router.add_get("/object_info", functools.partial(_answer, info))
        app.router.add_get("/embeddings", functools.partial(_answer, listed))
        app.router.add_get("/system_stats", functools.partial(_answer, SYSTEM_STATS))
        app.router.add_get("/extensions", functools.partial(_answer, b"[]"))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port + index).start()
        runners.append(runner)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    for runner in runners:
        await runner.cleanup()


async def _answer(body: bytes, request: web.Request) -> web.Response:
    return web.Response(body=body, content_type="application/json")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--kind", choices=("same", "different"), required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.count, args.kind))
